using Nabla.Graph;
using Nabla.Interop.Onnx.Export;
using Nabla.Interop.Onnx.Ops;
using Nabla.NN;
using G = Nabla.Graph.Graph;

namespace Nabla.Interop.Onnx;

/// <summary>
/// Saved Nabla graphs (<c>model.nabla.json</c> + <c>model.safetensors</c>, <see cref="GraphFile"/>) as runnable models:
/// <see cref="Load(string)"/> gives an <see cref="OnnxModel"/> over ONNX's operator kernels (so every ONNX operator
/// works, and <see cref="OnnxFusion"/> applies as for ONNX files), <see cref="SaveGraph(Module, string, Tensor[], IReadOnlyDictionary{int, int}?)"/>
/// traces a module into one, and <see cref="ConvertOnnx"/> turns an ONNX file into one.
/// <c>OnnxModel.Load</c> also accepts a <c>.nabla.json</c> path.
/// </summary>
public static class NablaGraphFiles
{
    /// <summary>Loads a saved graph and its weights, fused unless NABLA_ONNX_FUSE=0.</summary>
    public static OnnxModel Load(string path) => Load(path, OnnxModel.FuseAtLoad);

    /// <summary>Loads a saved graph; errors (format, weights, structure, unknown operators) are <see cref="ModelFormatException"/>s naming the file.</summary>
    /// <param name="fuse">apply <see cref="OnnxFusion"/> (off keeps the file's nodes, as inspection wants)</param>
    public static OnnxModel Load(string path, bool fuse)
    {
        var (graph, producer) = GraphFile.Read(path);
        try { return OnnxModel.FromGraph(graph, producer, fuse); }
        catch (ModelFormatException e) { throw new ModelFormatException($"{path}: {e.Message}", e); }
    }

    /// <summary>
    /// Traces <paramref name="model"/>.Forward on one example input (checked against eager execution, as
    /// <see cref="TracedOnnxExporter.ExportOnnx(Module, string, Tensor[], IReadOnlyDictionary{int, int}?, int)"/> does)
    /// and saves the graph to <paramref name="path"/> (<c>.nabla.json</c>) and its weights beside it.
    /// </summary>
    /// <param name="dynamicAxes">input index → axis saved as the symbolic "batch"; null: axis 0 of every input; empty: static</param>
    public static void SaveGraph(this Module model, string path, Tensor[] exampleInputs, IReadOnlyDictionary<int, int>? dynamicAxes = null)
    {
        ArgumentNullException.ThrowIfNull(exampleInputs);
        if (exampleInputs.Length != 1)
            throw new NablaException($"save graph: Module.Forward takes one input, {exampleInputs.Length} examples were given; trace a function for several inputs");
        model.SaveGraph(xs => [model.Forward(xs[0])], path, exampleInputs, dynamicAxes);
    }

    /// <summary>Traces <paramref name="fn"/> (with <paramref name="model"/>'s parameters as named initializers) and saves the graph.</summary>
    public static void SaveGraph(this Module model, Func<Tensor[], Tensor[]> fn, string path, Tensor[] exampleInputs,
        IReadOnlyDictionary<int, int>? dynamicAxes = null, string[]? inputNames = null, string[]? outputNames = null)
    {
        var g = TracedOnnxExporter.Trace(model, fn, exampleInputs, dynamicAxes, inputNames, outputNames);
        g.Save(path, $"{Producer} (traced {model.GetType().Name})");
    }

    /// <summary>Saves a loaded model's graph (as it is now: fused or optimized graphs save their rewritten nodes).</summary>
    /// <exception cref="NablaException">when the model uses STRING tensors, which the format does not hold.</exception>
    public static void SaveGraph(this OnnxModel model, string path)
    {
        ArgumentNullException.ThrowIfNull(model);
        CheckNoStrings(model, path);
        model.Graph.Save(path, model.ProducerName.Length > 0 ? $"{Producer} (from '{model.ProducerName}')" : Producer);
    }

    /// <summary>
    /// Converts an ONNX file to a saved Nabla graph, node for node (no fusion). Before ONNX IR version 4 every
    /// initializer was also listed as a graph input but meant as a constant; those inputs are dropped, so the saved
    /// graph's inputs are the ones a caller feeds.
    /// </summary>
    public static OnnxModel ConvertOnnx(string onnxPath, string outPath)
    {
        var model = OnnxModel.Load(onnxPath, fuse: false);
        CheckNoStrings(model, outPath);
        var g = model.Graph;
        if (model.IrVersion < 4) g.Inputs.RemoveAll(v => g.Initializers.ContainsKey(v.Name));
        g.Save(outPath, $"{Producer} (converted from {Path.GetFileName(onnxPath)}{(model.ProducerName.Length > 0 ? $", producer '{model.ProducerName}'" : "")})");
        return model;
    }

    static string Producer => $"nabla {typeof(NablaGraphFiles).Assembly.GetName().Version?.ToString(3)}";

    static void CheckNoStrings(OnnxModel model, string path)
    {
        if (model.StringValues.Count > 0 || HoldsStrings(model.Graph))
            throw new NablaException($"save graph {path}: the model uses STRING tensors{(model.StringValues.Count > 0 ? $" ({string.Join(", ", model.StringValues.Order(StringComparer.Ordinal))})" : "")}, which the Nabla graph format does not hold; serve the ONNX file instead");
    }

    /// <summary>Whether the graph needs the string-aware kernels: string constants or casts, or ai.onnx.ml operators.</summary>
    internal static bool UsesStrings(G g) => HoldsStrings(g) || Walk(g).Any(n => n.Domain == "ai.onnx.ml");

    static bool HoldsStrings(G g) =>
        AllGraphs(g).Any(x => x.Initializers.Values.Any(StringTensor.IsCarrier))
        || Walk(g).Any(n => n.OpType == "Cast" && n.Attributes.TryGetValue("to", out var to) && to.Kind == AttributeKind.Int && to.Int == 8
            || n.Attributes.Values.Any(a => a.Name is "value_string" or "value_strings" || StringTensor.IsCarrier(a.Tensor) || (a.Tensors ?? []).Any(StringTensor.IsCarrier)));

    static IEnumerable<G> AllGraphs(G g)
    {
        yield return g;
        foreach (var n in g.Nodes)
            foreach (var a in n.Attributes.Values)
                foreach (var sub in a.Graph is not null ? [a.Graph] : a.Graphs ?? [])
                    foreach (var x in AllGraphs(sub)) yield return x;
    }

    static IEnumerable<Node> Walk(G g) => AllGraphs(g).SelectMany(x => x.Nodes);
}
