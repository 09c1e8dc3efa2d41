using System.Diagnostics;
using Nabla;
using Nabla.Cli;
using Nabla.IO;
using Nabla.Interop.Onnx;

/// <summary>`nabla run` (execute an ONNX model on .npy or TensorProto .pb inputs) and `nabla inspect` for .onnx files.</summary>
static class OnnxCommands
{
    public const string RunHelp = """
        nabla run MODEL.onnx: run an ONNX model (or a saved Nabla graph, MODEL.nabla.json) on input files and write every output.

        options:
          --input NAME=PATH   an input: a .npy file or an ONNX TensorProto .pb file (repeat for each input)
          --output-dir DIR    where each output goes as DIR/<output name>.npy (default: outputs)
          --profile N         then run N more times (after one warm-up run) and print each node's time per call
        """;

    public static bool IsOnnx(string path) => path.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase);

    static Tensor ReadInput(string path) =>
        path.EndsWith(".npy", StringComparison.OrdinalIgnoreCase) ? Npy.Load(path)
        : path.EndsWith(".pb", StringComparison.OrdinalIgnoreCase) ? OnnxModel.ReadTensor(path)
        : throw new UsageException($"input '{path}' must be a .npy or .pb file");

    public static int Run(string[] argv)
    {
        // --input may repeat, so it is collected by hand before the common parser sees the rest.
        var inputs = new List<(string name, string path)>();
        var rest = new List<string>();
        for (int i = 0; i < argv.Length; i++)
        {
            if (argv[i] == "--input" || argv[i].StartsWith("--input=", StringComparison.Ordinal))
            {
                var spec = argv[i] == "--input" ? (i + 1 < argv.Length ? argv[++i] : throw new UsageException("option '--input' needs NAME=PATH")) : argv[i]["--input=".Length..];
                int eq = spec.IndexOf('=');
                if (eq <= 0) throw new UsageException($"--input expects NAME=PATH, got '{spec}'");
                inputs.Add((spec[..eq], spec[(eq + 1)..]));
            }
            else rest.Add(argv[i]);
        }
        var a = new Args(rest, new HashSet<string>(), new HashSet<string> { "--output-dir", "--profile" });
        if (a.Positionals.Count != 1) throw new UsageException("expects exactly one MODEL.onnx");
        int runs = a.Int("--profile", 0);
        if (runs < 0 || (a.Has("--profile") && runs == 0)) throw new UsageException($"--profile expects a positive count of runs, got {runs}");
        var model = OnnxModel.Load(a.Positionals[0]);
        var feeds = new Dictionary<string, Tensor>();
        foreach (var (name, path) in inputs) feeds[name] = ReadInput(path);
        var missing = model.Graph.Inputs.Select(i => i.Name).Where(n => !feeds.ContainsKey(n) && !model.Graph.Initializers.ContainsKey(n)).ToList();
        if (missing.Count > 0) throw new UsageException($"missing inputs: {string.Join(", ", missing)} (give each as --input NAME=PATH)");
        var unknown = feeds.Keys.Where(k => model.Graph.Inputs.All(i => i.Name != k)).ToList();
        if (unknown.Count > 0) throw new UsageException($"the model has no input named {string.Join(", ", unknown)}; its inputs: {string.Join(", ", model.Graph.Inputs.Select(i => i.Name))}");
        // NOTE: `run` takes every initializer as a constant (also those old models list as inputs); feeding one is refused.
        var report = model.Optimize(foldOverridableInitializers: true);
        Console.WriteLine($"graph passes: {report.FoldedNodes} nodes folded to constants, {report.RemovedNodes} dead nodes and {report.RemovedInitializers} unused initializers removed");
        var clock = Stopwatch.StartNew();
        var outputs = model.Run(feeds);
        var dir = a.Get("--output-dir", "outputs");
        Directory.CreateDirectory(dir);
        foreach (var (name, t) in outputs)
        {
            // NOTE: output names may contain characters that are not valid in file names; those are replaced.
            var file = Path.Combine(dir, string.Concat(name.Select(ch => Path.GetInvalidFileNameChars().Contains(ch) ? '_' : ch)) + ".npy");
            Npy.Save(file, t);
            Console.WriteLine($"{name}: {t.DType.TorchName()} [{string.Join(", ", t.Shape)}] -> {file}");
        }
        Console.WriteLine($"ran in {clock.Elapsed.TotalMilliseconds:0.0} ms");
        if (runs > 0)
        {
            // NOTE: the outputs are not disposed: one may be an input passed through (Identity), which must stay usable.
            model.Run(feeds);   // warm-up: the first run above was cold
            var profiler = new Nabla.Graph.NodeProfiler();
            model.Profiler = profiler;
            clock.Restart();
            for (int r = 0; r < runs; r++) model.Run(feeds);
            Console.WriteLine($"{runs} profiled runs: {clock.Elapsed.TotalMilliseconds / runs:0.000} ms per run");
            Console.Write(profiler.Format());
        }
        return 0;
    }

    public static int Inspect(string path)
    {
        var model = OnnxModel.Load(path, fuse: false);   // show the file's operators, not the fused inference graph
        var g = model.Graph;
        Console.WriteLine($"{path}: IR version {model.IrVersion}, producer '{model.ProducerName}', opsets {Opsets(model.Opsets)}");
        PrintGraph(g);
        return 0;
    }

    internal static string Opsets(IEnumerable<KeyValuePair<string, long>> opsets) =>
        string.Join(", ", opsets.Select(kv => (kv.Key.Length == 0 ? "ai.onnx" : kv.Key) + " " + kv.Value));

    /// <summary>Inputs (initializers left out), outputs, operator counts and the parameter count of a graph.</summary>
    internal static void PrintGraph(Nabla.Graph.Graph g)
    {
        var inits = g.Initializers.Keys.ToHashSet();
        Console.WriteLine("inputs:");
        foreach (var i in g.Inputs.Where(i => !inits.Contains(i.Name))) Console.WriteLine($"  {i}");
        Console.WriteLine("outputs:");
        foreach (var o in g.Outputs) Console.WriteLine($"  {o}");
        Console.WriteLine("operators:");
        foreach (var grp in g.Nodes.GroupBy(n => n.OpType).OrderByDescending(x => x.Count()).ThenBy(x => x.Key, StringComparer.Ordinal))
            Console.WriteLine($"  {grp.Key,-24} {grp.Count()}");
        long parameters = g.Initializers.Values.Sum(t => (long)t.NumElements);
        Console.WriteLine($"{g.Nodes.Count} nodes, {g.Initializers.Count} initializers, {parameters:N0} parameters");
    }
}
