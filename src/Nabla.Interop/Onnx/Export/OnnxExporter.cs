using Google.Protobuf;
using Nabla.Interop.Onnx.Proto;
using Nabla.NN;

namespace Nabla.Interop.Onnx.Export;

/// <summary>Emits the ONNX nodes of one module applied to <paramref name="input"/> and returns its output.</summary>
/// <param name="path">the module's state-dict prefix ("" for the root), for node and initializer names and errors</param>
public delegate OnnxValue OnnxModuleConverter(OnnxGraphBuilder builder, Module module, string path, OnnxValue input);

/// <summary>
/// Structural ONNX export: walks the module tree, and for each known module type emits the equivalent ONNX nodes
/// with its parameters and buffers as initializers named by their state-dict keys. The model is run on the
/// example input along the way (in eval mode, without gradients), which gives each step exact ranks and sizes.
/// <c>OnnxExporter.Export(model, "model.onnx", Tensor.Randn([1, 1, 28, 28]))</c>.
/// </summary>
/// <remarks>
/// The export has eval-mode semantics: Dropout becomes Identity and batch norm uses its running statistics.
/// A module type the exporter does not know throws <see cref="NablaException"/> naming the type and its path;
/// <see cref="Register{TModule}"/> adds converters for custom modules. <see cref="TracedOnnxExporter"/> exports any
/// model built from traceable ops (the model zoo included) without converters; docs/onnx-export.md compares the two.
/// </remarks>
public static class OnnxExporter
{
    /// <summary>The range of ai.onnx opsets the exporter writes (LayerNormalization needs 17; Gelu is native from 20).</summary>
    public const int MinOpset = 13, MaxOpset = 21;

    /// <summary>ONNX IR version 8 (ONNX 1.10+), which every current runtime reads.</summary>
    public const long IrVersion = 8;

    static readonly Dictionary<Type, OnnxModuleConverter> Registered = new();
    static readonly Lock RegisterLock = new();

    /// <summary>Exports <paramref name="model"/> to an ONNX file at <paramref name="path"/>.</summary>
    /// <param name="exampleInput">an input the model accepts; fixes every dimension but the batch (dimension 0)</param>
    /// <param name="dynamicBatch">declare dimension 0 of the input and output as the symbolic "batch"</param>
    public static void Export(Module model, string path, Tensor exampleInput, bool dynamicBatch = true, int opset = 17)
    {
        var bytes = ExportToBytes(model, exampleInput, dynamicBatch, opset);
        var dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir is not null) Directory.CreateDirectory(dir);
        File.WriteAllBytes(path, bytes);
    }

    /// <summary>The serialized ModelProto that <see cref="Export"/> writes.</summary>
    public static byte[] ExportToBytes(Module model, Tensor exampleInput, bool dynamicBatch = true, int opset = 17) =>
        BuildModel(model, exampleInput, dynamicBatch, opset).ToByteArray();

    /// <summary>Adds (or replaces) the converter for modules of exactly type <typeparamref name="TModule"/>; it wins over the built-in one.</summary>
    public static void Register<TModule>(OnnxModuleConverter converter) where TModule : Module
    {
        lock (RegisterLock) Registered[typeof(TModule)] = converter;
    }

    internal static ModelProto BuildModel(Module model, Tensor exampleInput, bool dynamicBatch, int opset)
    {
        if (opset < MinOpset || opset > MaxOpset)
            throw new NablaException($"onnx export: opset {opset} is not supported (the exporter writes opsets {MinOpset}..{MaxOpset})");
        if (dynamicBatch && exampleInput.Dim == 0)
            throw new NablaException("onnx export: a dynamic batch needs an example input of rank 1 or more, got a scalar");
        ConverterTable table;
        lock (RegisterLock) table = new ConverterTable(new Dictionary<Type, OnnxModuleConverter>(Registered));

        // NOTE: eval() for the export, then each module's own mode back in pre-order, so a parent's Train(mode)
        // never overrides a child that was in a different mode.
        var modes = model.NamedModules().Select(m => (m.module, m.module.Training)).ToList();
        model.Eval();
        try
        {
            using var noGrad = GradMode.NoGrad();
            var b = new OnnxGraphBuilder(opset, table);
            var input = new OnnxValue(b.UniqueName("input"), exampleInput.Detach());
            var output = b.Emit(model, "", input);
            if (!b.TryRenameLastOutput(output.Name, "output"))
            {
                var id = b.Node("Identity", "output_identity", [output.Name]);
                if (!b.TryRenameLastOutput(id, "output")) throw new NablaException("onnx export: could not name the graph output");
            }
            var g = b.Graph;
            g.Name = model.GetType().Name;
            g.Input.Add(ValueInfo(input.Name, input.Example, dynamicBatch));
            bool batchedOutput = dynamicBatch && output.Example.Dim > 0 && output.Example.Size(0) == exampleInput.Size(0);
            g.Output.Add(ValueInfo("output", output.Example, batchedOutput));
            var proto = new ModelProto
            {
                IrVersion = IrVersion,
                ProducerName = "nabla",
                ProducerVersion = typeof(OnnxExporter).Assembly.GetName().Version?.ToString() ?? "",
                Graph = g,
            };
            proto.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = opset });
            return proto;
        }
        finally
        {
            foreach (var (m, training) in modes) m.Train(training);
        }
    }

    static ValueInfoProto ValueInfo(string name, Tensor example, bool dynamicBatch)
    {
        var shape = new TensorShapeProto();
        for (int i = 0; i < example.Dim; i++)
            shape.Dim.Add(i == 0 && dynamicBatch
                ? new TensorShapeProto.Types.Dimension { DimParam = "batch" }
                : new TensorShapeProto.Types.Dimension { DimValue = example.Size(i) });
        return new ValueInfoProto
        {
            Name = name,
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = OnnxGraphBuilder.DataType(example.DType, name), Shape = shape } },
        };
    }

    /// <summary>The converters one export uses: the registered ones (a snapshot), then the built-in ones.</summary>
    internal sealed class ConverterTable(Dictionary<Type, OnnxModuleConverter> registered)
    {
        public OnnxValue Convert(OnnxGraphBuilder b, Module m, string path, OnnxValue x)
        {
            if (registered.TryGetValue(m.GetType(), out var custom)) return custom(b, m, path, x);
            return ModuleConverters.TryConvert(b, m, path, x)
                ?? throw new NablaException($"onnx export: unsupported module {m.GetType().Name} at '{(path.Length == 0 ? "(root)" : path)}'"
                    + $"; the exporter knows {ModuleConverters.Supported} (register a converter with OnnxExporter.Register for others)");
        }
    }
}
