using System.Diagnostics;
using System.Globalization;
using System.Reflection;
using System.Text;
using Torch = TorchSharp.torch;

namespace Nabla.Bench;

/// <summary>
/// Nabla vs TorchSharp (libtorch) vs ONNX Runtime, side by side. The parent process runs one child per
/// thread count (Nabla reads NABLA_NUM_THREADS once at startup), each child measures every framework
/// interleaved, and the parent prints one markdown table of ratios.
///
/// usage: dotnet run -c Release --project bench/Nabla.Bench [-- --threads 1,2] [--samples 9]
///        [--sample-seconds 0.15] [--filter matmul,mlp] [--out results.md]
/// </summary>
static class Program
{
    static int Main(string[] args)
    {
        CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
        CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
        if (args.Length > 0 && args[0] == ServingBench.GrpcClientFlag) return ServingBench.GrpcClient(args);
        if (args.Contains("--serving")) return ServingBench.Run(args);
        if (args.Contains("--peak")) return Peak.Run();
        if (args.Contains("--probe")) { Console.WriteLine(HostProbe.Measure()); return 0; }
        if (args.Contains("--help") || args.Contains("-h"))
        {
            Console.WriteLine(Usage);
            return 0;
        }
        Options opts;
        try { opts = Options.Parse(args); }
        catch (Exception e) when (e is ArgumentException or FormatException or OverflowException)
        {
            Console.Error.WriteLine($"Nabla.Bench: {e.Message}\n{Usage}");
            return 2;
        }
        if (opts.Child) return RunChild(opts);
        return RunParent(opts, args);
    }

    const string Usage = """
        usage: dotnet run -c Release --project bench/Nabla.Bench -- [--threads 1,2] [--samples 9] [--sample-seconds 0.15]
                      [--quick] [--filter matmul,mlp] [--out results.md] [--pytorch | --python PATH]
               --filter keeps the rows whose id contains one of the words; ids: matmul512, matmul1024, matmul2048,
                 mm1x768x2304, mm64x768x3072, bmm12x128x64x128, add1x1, add32x32, mlp64, mlp256, mlp64-adam, mlp256-adam,
                 cnn64, lenet1, lenet64, onnx-lenet-b1, onnx-lenet-b64, onnx-mnist8-b1, onnx-mnist8-b8, onnx-resnet18-b1,
                 onnx-resnet18-b8, onnx-linear-m1, onnx-linear-m16, onnx-linear-m64,
                 onnx-linear-matmul-m16, gpt2-decode
               --pytorch adds Debian's PyTorch (/usr/bin/python3 with python3-torch; --python PATH for another
                 interpreter) to the rows it has, measured by pytorch_rows.py after each child
               ... -- --peak                  the FMA ceiling per core and on all cores
               ... -- --probe                 the host probe printed with every table (FMA rates, load latencies, core-to-core round trip)
               ... -- --serving [--seconds N] the model server against its peers (bench/README.md, "Serving")
        """;

    // ---------------------------------------------------------------- child: one thread count

    static int RunChild(Options o)
    {
        int t = o.Threads[0];
        Harness.Samples = o.Samples;
        Harness.SampleSeconds = o.SampleSeconds;
        Torch.set_num_threads(t);
        Torch.set_num_interop_threads(1);
        Emit("INFO", "nabla_threads", NablaThreads().ToString());
        Emit("INFO", "torch_threads", Torch.get_num_threads().ToString());
        Emit("INFO", "torch_version", Torch.__version__);
        Emit("INFO", "torchsharp", typeof(Torch).Assembly.GetName().Version?.ToString() ?? "?");
        Emit("INFO", "onnxruntime", typeof(Microsoft.ML.OnnxRuntime.InferenceSession).Assembly
            .GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion.Split('+')[0] ?? "?");
        Emit("INFO", "dotnet", Environment.Version.ToString());
        Verify();
        foreach (var row in Rows.All(t))
        {
            if (o.Filter.Length > 0 && !o.Filter.Any(f => row.Id.Contains(f, StringComparison.OrdinalIgnoreCase))) continue;
            Console.Error.Write($"  [{t} thread{(t > 1 ? "s" : "")}] {row.Title} ...");
            var sw = Stopwatch.StartNew();
            var ms = Harness.Run(row.Candidates);
            Console.Error.WriteLine($" {sw.Elapsed.TotalSeconds:F1} s; cores busy: " + string.Join(", ", ms.Select(m => $"{m.Framework} {m.Cores:F2}")));
            foreach (var m in ms)
                Emit("ROW", row.Id, row.Title, row.Unit.ToString(), row.Flops.ToString("R"), m.Framework,
                    m.Seconds.ToString("R"), m.Spread.ToString("R"), m.Iterations.ToString(),
                    string.Join(';', m.Times.Select(x => x.ToString("R"))));
        }
        return 0;
    }

    /// <summary>The three frameworks must compute the same batched product before their speeds are compared.</summary>
    static void Verify()
    {
        var rng = new Random(7);
        var a = Enumerable.Range(0, 3 * 5 * 7).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
        var b = Enumerable.Range(0, 3 * 7 * 4).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
        var nabla = Tensor.FromArray(a, 3, 5, 7).Matmul(Tensor.FromArray(b, 3, 7, 4)).ToFloatArray();
        var torchOut = Torch.matmul(Torch.tensor(a, [3, 5, 7]), Torch.tensor(b, [3, 7, 4])).data<float>().ToArray();
        using var session = new Microsoft.ML.OnnxRuntime.InferenceSession(OnnxModels.MatMul([3, 5, 7], [3, 7, 4], [3, 5, 4]));
        using var va = Microsoft.ML.OnnxRuntime.OrtValue.CreateTensorValueFromMemory(a, [3, 5, 7]);
        using var vb = Microsoft.ML.OnnxRuntime.OrtValue.CreateTensorValueFromMemory(b, [3, 7, 4]);
        using var outs = session.Run(new Microsoft.ML.OnnxRuntime.RunOptions(), ["A", "B"], [va, vb], ["Y"]);
        var ort = outs[0].GetTensorDataAsSpan<float>().ToArray();
        for (int i = 0; i < nabla.Length; i++)
        {
            if (Math.Abs(nabla[i] - torchOut[i]) > 1e-4 || Math.Abs(nabla[i] - ort[i]) > 1e-4)
                throw new InvalidOperationException($"matmul results differ at {i}: Nabla {nabla[i]}, TorchSharp {torchOut[i]}, ONNX Runtime {ort[i]}");
        }
    }

    static void Emit(params string[] fields) => Console.Out.WriteLine(string.Join('\t', fields));

    /// <summary>Nabla's GEMM thread count as it actually took effect (an internal field, read for the report).</summary>
    static int NablaThreads()
    {
        var f = typeof(Tensor).Assembly.GetType("Nabla.Gemm")?.GetField("Threads", BindingFlags.NonPublic | BindingFlags.Static);
        return f?.GetValue(null) is int v ? v : -1;
    }

    // ---------------------------------------------------------------- parent: spawn, collect, print

    sealed record Result(int Threads, string Id, string Title, Unit Unit, double Flops, string Framework, double Seconds, double Spread, double[] Times);

    static int RunParent(Options o, string[] args)
    {
        var results = new List<Result>();
        var info = new SortedDictionary<string, string>();
        var total = Stopwatch.StartNew();
        string load0 = LoadAverage();
        string probe0 = HostProbe.Measure();
        foreach (int t in o.Threads)
        {
            Console.Error.WriteLine($"threads = {t}");
            var psi = ChildStartInfo(o, t);
            using var p = Process.Start(psi)!;
            ReadProtocol(p, t, results, (key, value) =>
            {
                info[$"{key} ({t} thread{(t > 1 ? "s" : "")})"] = value;
                info.TryAdd(key, value);
            });
            if (p.ExitCode != 0)
            {
                Console.Error.WriteLine($"child for {t} thread(s) failed with exit code {p.ExitCode}");
                return p.ExitCode;
            }
            if (o.Python is not null)
            {
                int rc = RunPyTorch(o, t, results, info);
                if (rc != 0) return rc;
            }
        }

        var md = new StringBuilder();
        md.AppendLine("Command: `dotnet run -c Release --project bench/Nabla.Bench" + (args.Length > 0 ? " -- " + string.Join(' ', args) : "") + "`");
        md.AppendLine($"Machine: {CpuModel()}, {Environment.ProcessorCount} logical cores; .NET {Environment.Version}; " +
            $"TorchSharp {Get(info, "torchsharp")} (libtorch {Get(info, "torch_version")}); ONNX Runtime {Get(info, "onnxruntime")}.");
        md.AppendLine($"Threads in effect: " + string.Join("; ", o.Threads.Select(t =>
            $"{t}: Nabla {Get(info, $"nabla_threads ({t} thread{(t > 1 ? "s" : "")})")}, torch {Get(info, $"torch_threads ({t} thread{(t > 1 ? "s" : "")})")}")) + ".");
        md.AppendLine($"Median of {o.Samples} interleaved samples of ~{o.SampleSeconds:0.###} s each after warm-up; " +
            $"noise = the row's largest (p75 - p25) / median; total run {total.Elapsed.TotalSeconds:F0} s; load average before/after: {load0} / {LoadAverage()}.");
        md.AppendLine($"Host probe before: {probe0}. After: {HostProbe.Measure()}.");
        bool py = results.Any(r => r.Framework == FwPyTorch);
        if (py)
            md.AppendLine($"PyTorch: Debian's python3-torch {Get(info, "pytorch_version")} ({Get(info, "pytorch_blas")}; threads in effect " +
                string.Join(", ", o.Threads.Select(t => $"{t}: {Get(info, $"pytorch_threads ({t} thread{(t > 1 ? "s" : "")})")}")) +
                "), through `pytorch_rows.py` in its own process after the child of the same thread count, so its samples are not " +
                "paired with Nabla's: Nabla / PyTorch is the ratio of the two medians, without an interval.");
        md.AppendLine("Ratio = Nabla time / peer time (below 1: Nabla faster; above 1: Nabla slower): the median of the per-round ratios " +
            $"(sample s of each framework comes from the same round), and in brackets its {CoverageText(o.Samples)} confidence interval " +
            "(order statistics; bench/README.md, \"How it measures\"). An interval that contains 1 is parity within this run's noise.");
        md.AppendLine();
        md.AppendLine("| benchmark | threads | Nabla | TorchSharp | ONNX Runtime | " + (py ? "PyTorch | " : "") +
            "Nabla / TorchSharp | Nabla / ORT | " + (py ? "Nabla / PyTorch | " : "") + "noise |");
        md.AppendLine("|---|---:|---:|---:|---:|---:|---:|---:|" + (py ? "---:|---:|" : ""));
        foreach (var group in results.GroupBy(r => r.Id))
        {
            foreach (var byT in group.GroupBy(r => r.Threads))
            {
                var first = byT.First();
                Result? Of(string fw) => byT.FirstOrDefault(r => r.Framework == fw);
                var nabla = Of(Rows.FwNabla);
                var tor = Of(Rows.FwTorch);
                var ort = Of(Rows.FwOrt);
                var pt = Of(FwPyTorch);
                double spread = byT.Max(r => r.Spread);
                md.AppendLine($"| {first.Title} | {byT.Key} | {Cell(nabla)} | {Cell(tor)} | {Cell(ort)} | " + (py ? $"{Cell(pt)} | " : "") +
                    $"{Ratio(nabla, tor)} | {Ratio(nabla, ort)} | " + (py ? $"{MedianRatio(nabla, pt)} | " : "") + $"{spread * 100:0}% |");
            }
        }
        var table = md.ToString();
        Console.WriteLine(table);
        if (o.Out is not null) File.WriteAllText(o.Out, table);
        return 0;
    }

    /// <summary>A ROW line of the child protocol (Nabla's child or pytorch_rows.py), split at its tabs.</summary>
    /// <summary>Reads a measuring process's protocol to its end and waits for it to exit: ROW lines become results, INFO lines
    /// go to <paramref name="onInfo"/> (each caller keys them its own way), anything else is passed on to stderr.</summary>
    static void ReadProtocol(Process p, int threads, List<Result> results, Action<string, string> onInfo)
    {
        string? line;
        while ((line = p.StandardOutput.ReadLine()) != null)
        {
            var f = line.Split('\t');
            if (f[0] == "INFO") onInfo(f[1], f[2]);
            else if (f[0] == "ROW") results.Add(ParseRow(f, threads));
            else Console.Error.WriteLine(line);
        }
        p.WaitForExit();
    }

    static Result ParseRow(string[] f, int threads) =>
        new(threads, f[1], f[2], Enum.Parse<Unit>(f[3]), double.Parse(f[4]), f[5], double.Parse(f[6]), double.Parse(f[7]),
            f[9].Split(';').Select(double.Parse).ToArray());

    static string Get(IDictionary<string, string> d, string k) => d.TryGetValue(k, out var v) ? v : "?";

    static string Cell(Result? r) => r is null ? "–" : r.Unit switch
    {
        Unit.GFlops => $"{r.Flops / r.Seconds / 1e9:0.0} GFLOP/s",
        Unit.MicrosPerOp => $"{r.Seconds * 1e6:0.00} µs",
        _ => $"{r.Seconds * 1e3:0.00} ms",
    };

    static string Ratio(Result? nabla, Result? peer)
    {
        if (nabla is null || peer is null) return "–";
        var (median, low, high) = PairedRatio.Of(nabla.Times, peer.Times);
        return $"{median:0.00} ({low:0.00}–{high:0.00})";
    }

    /// <summary>Nabla's median over the peer's, for a peer measured in another process at another time (no pairing).</summary>
    static string MedianRatio(Result? nabla, Result? peer) =>
        nabla is null || peer is null ? "–" : $"{nabla.Seconds / peer.Seconds:0.00}";

    const string FwPyTorch = "PyTorch";
    const string OpenBlasOpenMp = "/usr/lib/x86_64-linux-gnu/openblas-openmp";

    /// <summary>
    /// Debian's PyTorch (python3-torch 1.13) through <c>pytorch_rows.py</c>: the rows with a PyTorch counterpart, measured
    /// the way <see cref="Harness"/> measures, in a process of its own right after the child of the same thread count
    /// (never beside it: two measuring processes would share the two cores).
    /// </summary>
    static int RunPyTorch(Options o, int threads, List<Result> results, SortedDictionary<string, string> info)
    {
        string script = Path.Combine(AppContext.BaseDirectory, "pytorch_rows.py");
        if (!File.Exists(script))
        {
            Console.Error.WriteLine($"--pytorch: {script} is missing (it is copied there by the build)");
            return 2;
        }
        var psi = new ProcessStartInfo(o.Python!) { RedirectStandardOutput = true, UseShellExecute = false };
        psi.ArgumentList.Add(script);
        foreach (var a in new[] { "--threads", threads.ToString(), "--samples", o.Samples.ToString(), "--sample-seconds", o.SampleSeconds.ToString("R") })
            psi.ArgumentList.Add(a);
        if (o.Filter.Length > 0)
        {
            psi.ArgumentList.Add("--filter");
            psi.ArgumentList.Add(string.Join(',', o.Filter));
        }
        foreach (var v in new[] { "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS" }) psi.Environment[v] = threads.ToString();
        // NOTE: Debian's default OpenBLAS (libopenblas0-pthread) keeps a thread pool of its own beside PyTorch's OpenMP one,
        // and at two threads the two pools fight over the two cores: the MLP step at batch 64 read 1.9–11.2 ms per sample
        // (01:29 UTC). Its OpenMP build (libopenblas0-openmp) shares OpenMP's pool: 0.95 ms with 1 % spread. So the script
        // loads that build when it is installed, without changing the system's alternatives; the table names the one loaded.
        if (File.Exists(OpenBlasOpenMp + "/libblas.so.3"))
            psi.Environment["LD_LIBRARY_PATH"] = OpenBlasOpenMp + (Environment.GetEnvironmentVariable("LD_LIBRARY_PATH") is { Length: > 0 } l ? ":" + l : "");
        Console.Error.WriteLine($"PyTorch, threads = {threads}");
        Process p;
        try { p = Process.Start(psi)!; }
        catch (System.ComponentModel.Win32Exception e)
        {
            Console.Error.WriteLine($"--pytorch: cannot start {o.Python}: {e.Message}");
            return 2;
        }
        using (p)
        {
            ReadProtocol(p, threads, results, (key, value) => info[key] = value);
            if (p.ExitCode != 0)
                Console.Error.WriteLine($"--pytorch: {o.Python} {script} exited with {p.ExitCode} (Debian's PyTorch: apt-get install python3-torch libopenblas0-openmp)");
            return p.ExitCode;
        }
    }

    /// <summary>The confidence level the interval of <see cref="PairedRatio"/> reaches with n rounds, as "96.1 %".</summary>
    static string CoverageText(int n) => $"{PairedRatio.Interval(n).Coverage * 100:0.0} %";

    static ProcessStartInfo ChildStartInfo(Options o, int threads)
    {
        var self = Environment.ProcessPath!;
        var psi = new ProcessStartInfo(self) { RedirectStandardOutput = true, UseShellExecute = false };
        // Under `dotnet Nabla.Bench.dll` the process is the dotnet host: pass the assembly first.
        if (Path.GetFileNameWithoutExtension(self).Equals("dotnet", StringComparison.OrdinalIgnoreCase))
            psi.ArgumentList.Add(typeof(Program).Assembly.Location);
        psi.ArgumentList.Add("--child");
        psi.ArgumentList.Add("--threads");
        psi.ArgumentList.Add(threads.ToString());
        psi.ArgumentList.Add("--samples");
        psi.ArgumentList.Add(o.Samples.ToString());
        psi.ArgumentList.Add("--sample-seconds");
        psi.ArgumentList.Add(o.SampleSeconds.ToString("R"));
        if (o.Filter.Length > 0)
        {
            psi.ArgumentList.Add("--filter");
            psi.ArgumentList.Add(string.Join(',', o.Filter));
        }
        psi.Environment["NABLA_NUM_THREADS"] = threads.ToString();
        psi.Environment["OMP_NUM_THREADS"] = threads.ToString();
        psi.Environment["MKL_NUM_THREADS"] = threads.ToString();
        return psi;
    }

    static string LoadAverage()
    {
        try { return string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)); }
        catch (IOException) { return "?"; }
    }

    static string CpuModel()
    {
        try
        {
            var lines = File.ReadLines("/proc/cpuinfo").TakeWhile(l => l.Length > 0).ToList();
            string Field(string name) => lines.FirstOrDefault(l => l.StartsWith(name, StringComparison.Ordinal)) is { } l ? l[(l.IndexOf(':') + 1)..].Trim() : "?";
            bool avx512 = Field("flags").Split(' ').Contains("avx512f");
            return $"{Field("model name")} (cpu family {Field("cpu family")}, model {Field("model\t")}{(avx512 ? ", AVX-512" : "")})";
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return System.Runtime.InteropServices.RuntimeInformation.OSArchitecture.ToString();
    }

    sealed class Options
    {
        public bool Child;
        public int[] Threads = [1, 2];
        public int Samples = 9;
        public double SampleSeconds = 0.15;
        public string[] Filter = [];
        public string? Out;
        public string? Python;

        public static Options Parse(string[] args)
        {
            var o = new Options();
            for (int i = 0; i < args.Length; i++)
            {
                string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
                switch (args[i])
                {
                    case "--child": o.Child = true; break;
                    case "--threads": o.Threads = Next().Split(',').Select(int.Parse).ToArray(); break;
                    case "--samples":
                        // (The interval's binomial tail is computed from 0.5^n, which stays a normal double up to n = 1022.)
                        o.Samples = int.Parse(Next());
                        if (o.Samples is < 1 or > 1000) throw new ArgumentException($"--samples must be 1 to 1000, got {o.Samples}");
                        break;
                    case "--sample-seconds": o.SampleSeconds = double.Parse(Next(), CultureInfo.InvariantCulture); break;
                    case "--filter": o.Filter = Next().Split(',', StringSplitOptions.RemoveEmptyEntries); break;
                    case "--out": o.Out = Next(); break;
                    case "--pytorch": o.Python = "/usr/bin/python3"; break;
                    case "--python": o.Python = Next(); break;
                    case "--quick": o.Samples = 5; o.SampleSeconds = 0.05; break;
                    default: throw new ArgumentException($"unknown option {args[i]}");
                }
            }
            return o;
        }
    }
}
