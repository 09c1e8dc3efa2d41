using Nabla;
using Nabla.Cli;
using Nabla.Graph;
using Nabla.Interop.Onnx;

/// <summary>`nabla convert MODEL.onnx OUT.nabla.json` and `nabla inspect OUT.nabla.json`: saved Nabla graphs (docs/nabla-graph-format.md).</summary>
static class GraphFileCommands
{
    public const string Help = """
        nabla convert MODEL.onnx OUT.nabla.json: save an ONNX model as a Nabla graph: OUT.nabla.json (the nodes) and
        OUT.safetensors beside it (every weight), node for node (no fusion). `nabla run`, `nabla inspect` and
        `nabla serve` (a version folder holding model.nabla.json) accept the result.
        """;

    /// <summary>True when convert should write a saved graph (some positional argument ends in .nabla.json).</summary>
    public static bool Wants(IEnumerable<string> argv) => argv.Any(a => !a.StartsWith("--", StringComparison.Ordinal) && GraphFile.IsGraphFile(a));

    public static int Convert(string[] argv)
    {
        var a = new Args(argv, new HashSet<string>(), new HashSet<string>());
        if (a.Positionals.Count != 2) throw new UsageException("expects MODEL.onnx and OUT.nabla.json");
        var (input, output) = (a.Positionals[0], a.Positionals[1]);
        if (!OnnxCommands.IsOnnx(input)) throw new UsageException($"'{input}': a Nabla graph is made from an .onnx file");
        if (!GraphFile.IsGraphFile(output)) throw new UsageException($"'{output}': the Nabla graph output must end in {GraphFile.Extension}");
        if (!File.Exists(input)) throw new ModelFormatException($"convert: file not found: {input}");
        var model = NablaGraphFiles.ConvertOnnx(input, output);
        var g = model.Graph;
        long parameters = g.Initializers.Values.Sum(t => (long)t.NumElements);
        Console.WriteLine($"wrote {output} and {GraphFile.WeightsPathFor(output)}: {g.Nodes.Count} nodes, {g.Initializers.Count} initializers, {parameters:N0} parameters");
        return 0;
    }

    public static int Inspect(string path)
    {
        var model = NablaGraphFiles.Load(path, fuse: false);   // the file's nodes, not the fused inference graph
        var g = model.Graph;
        Console.WriteLine($"{path}: Nabla graph (format version {GraphFile.FormatVersion}), producer '{model.ProducerName}', opsets {OnnxCommands.Opsets(g.Opsets)}");
        OnnxCommands.PrintGraph(g);
        return 0;
    }
}
