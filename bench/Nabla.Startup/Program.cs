using System.Diagnostics;
using Nabla;
using Nabla.NN;
using Nabla.Optim;
using Nabla.Training;

namespace Nabla.Startup;

/// <summary>
/// Whole-process measurements (bench/README.md):
///   hello             print one line and exit (the runtime's own start-up floor, for comparison);
///   lenet             build LeNet-5, run one batch-1 inference, print the predicted class and exit (cold start);
///   train-mlp [steps] [scope]  train MLP 784-512-256-10 with Adam on batch 64 for 1,000 steps (each step in a
///                     dispose scope with "scope"), print the loss, the time per step, the process's peak resident set
///                     (VmHWM) and the collections, and exit (peak memory);
///   load-onnx FILE    load an ONNX model (the default fusions), run it once on uniform(0, 1) inputs of its declared
///                     shapes (unknown dimensions 1), print the load and first-run times, the JIT time, the peak
///                     resident set (and the peak by the end of the load) and the collections, and exit (a server's or CLI's start on a real model);
///   measure CMD [N]   start this program N times with CMD and print the median and min wall time of each run.
/// </summary>
static class Program
{
    static int Main(string[] args)
    {
        string verb = args.Length > 0 ? args[0] : "lenet";
        switch (verb)
        {
            case "hello": Console.WriteLine("hello"); return 0;
            case "lenet": return LeNet();
            case "train-mlp": return TrainMlp(args.Length > 1 ? int.Parse(args[1]) : 1000, args.Length > 2 && args[2] == "scope");
            case "load-onnx" when args.Length > 1: return LoadOnnx(args[1]);
            case "measure": return Measure(args.Length > 1 ? args[1] : "lenet", args.Length > 2 ? int.Parse(args[2]) : 20);
            default:
                Console.Error.WriteLine($"unknown verb '{verb}': expected lenet, train-mlp [steps] [scope], load-onnx FILE or measure lenet|train-mlp [runs]");
                return 2;
        }
    }

    static int LoadOnnx(string path)
    {
        var sw = Stopwatch.StartNew();
        var model = Nabla.Interop.Onnx.OnnxModel.Load(path);
        double load = sw.Elapsed.TotalMilliseconds, jitLoad = System.Runtime.JitInfo.GetCompilationTime().TotalMilliseconds;
        double loadPeak = PeakRssMiB();
        var feeds = model.Graph.Inputs.Where(i => !model.Graph.Initializers.ContainsKey(i.Name))
            .Select(i => Tensor.Rand(i.Shape?.Select(d => (int)(d.Value ?? 1)).ToArray() ?? [1], i.DType ?? DType.Float32)).ToArray();
        sw.Restart();
        foreach (var y in model.Run(feeds)) y.Dispose();
        double first = sw.Elapsed.TotalMilliseconds;
        Console.WriteLine($"load {load:F0} ms (JIT {jitLoad:F0} ms), first run {first:F0} ms (JIT in all {System.Runtime.JitInfo.GetCompilationTime().TotalMilliseconds:F0} ms), " +
            $"peak RSS {PeakRssMiB():F0} MiB ({loadPeak:F0} by the end of the load), collections gen0/1/2 {GC.CollectionCount(0)}/{GC.CollectionCount(1)}/{GC.CollectionCount(2)}");
        return 0;
    }

    static int LeNet()
    {
        // NABLA_STARTUP_TRACE=1 prints how long each stage took (time since process start first).
        bool trace = Environment.GetEnvironmentVariable("NABLA_STARTUP_TRACE") == "1";
        var sw = Stopwatch.StartNew();
        void Stage(string name)
        {
            if (!trace) return;
            Console.Error.WriteLine($"  {name}: {sw.Elapsed.TotalMilliseconds:F1} ms (JIT so far: {System.Runtime.JitInfo.GetCompiledMethodCount()} methods, {System.Runtime.JitInfo.GetCompilationTime().TotalMilliseconds:F1} ms)");
            sw.Restart();
        }
        if (trace) Console.Error.WriteLine($"  runtime start to Main: {(DateTime.Now - Process.GetCurrentProcess().StartTime).TotalMilliseconds:F0} ms (10 ms resolution)");
        Tensor.ManualSeed(0);
        Stage("seed");
        var model = BuiltinModels.LeNet();
        model.Eval();
        Stage("build LeNet");
        using var _ = GradMode.NoGrad();
        var x = Tensor.Zeros(1, 1, 28, 28);
        var y = model.Forward(x);
        Stage("first forward");
        long cls = (long)y.Argmax(1).Item();
        Stage("argmax");
        model.Forward(x);
        Stage("second forward");
        Console.WriteLine($"class {cls}");
        return 0;
    }

    static int TrainMlp(int steps, bool scopes)
    {
        Tensor.ManualSeed(0);
        var model = BuiltinModels.Create("mlp");
        var opt = new Adam(model.Parameters(), lr: 1e-3);
        var x = Tensor.Randn(64, 1, 28, 28);
        var t = Tensor.Randint(0, 10, [64]);
        double loss = 0;
        var clock = Stopwatch.StartNew();
        for (int i = 0; i < steps; i++)
        {
            using var scope = scopes ? Tensor.NewDisposeScope() : null;
            opt.ZeroGrad();
            var l = Losses.CrossEntropy(model.Forward(x), t);
            l.Backward();
            opt.Step();
            if (i == steps - 1) loss = l.Item();
        }
        Console.WriteLine($"steps {steps} loss {loss:F4} ms_per_step {clock.Elapsed.TotalMilliseconds / steps:F2} peak_rss_mib {PeakRssMiB():F1} gc0 {GC.CollectionCount(0)} gc2 {GC.CollectionCount(2)}");
        return 0;
    }

    /// <summary>VmHWM from /proc/self/status (Linux), in MiB; NaN elsewhere.</summary>
    static double PeakRssMiB()
    {
        const string path = "/proc/self/status";
        if (!File.Exists(path)) return double.NaN;
        foreach (var line in File.ReadLines(path))
            if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                return long.Parse(line["VmHWM:".Length..].Trim().Split(' ')[0]) / 1024.0;
        return double.NaN;
    }

    static int Measure(string verb, int runs)
    {
        var exe = Environment.ProcessPath ?? throw new InvalidOperationException("measure: cannot find this program's path");
        var host = Path.GetFileNameWithoutExtension(exe) == "dotnet";
        var dll = Path.Combine(AppContext.BaseDirectory, "Nabla.Startup.dll");
        var times = new List<double>();
        for (int i = 0; i < runs + 1; i++)
        {
            var psi = new ProcessStartInfo(exe) { RedirectStandardOutput = true, UseShellExecute = false };
            if (host) psi.ArgumentList.Add(dll);
            psi.ArgumentList.Add(verb);
            var sw = Stopwatch.StartNew();
            using var p = Process.Start(psi)!;
            string output = p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            sw.Stop();
            if (p.ExitCode != 0) { Console.Error.WriteLine($"measure: run {i} exited with {p.ExitCode}"); return 1; }
            if (i == 0) { Console.WriteLine($"first run (discarded, warms the file cache): {sw.Elapsed.TotalMilliseconds:F1} ms, output: {output.Trim()}"); continue; }
            times.Add(sw.Elapsed.TotalMilliseconds);
        }
        times.Sort();
        Console.WriteLine($"{verb}: {runs} runs, wall ms median {times[times.Count / 2]:F1}, min {times[0]:F1}, max {times[^1]:F1}");
        return 0;
    }
}
