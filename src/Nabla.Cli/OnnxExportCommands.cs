using Nabla;
using Nabla.Cli;
using Nabla.Interop.Onnx.Export;
using Nabla.Optim;
using Nabla.Training;

/// <summary>`nabla convert CHECKPOINT OUT.onnx --model NAME`: export a trained built-in model to ONNX.</summary>
static class OnnxExportCommands
{
    public const string Help = """
        nabla convert CHECKPOINT OUT.onnx --model NAME: export a checkpoint written by nabla train (or quickstart)
        as an ONNX model (opset 17 by default; input "input" [batch, C, H, W], output "output" [batch, classes]).

        options:
          --model NAME        mlp, lenet, cnn or resnet: the architecture it was trained with (default: the one the
                              checkpoint records)
          --in-channels N     input channels of the built-in model (default 1)
          --image-size N      input height and width (default 28)
          --num-classes N     classes (default 10)
          --opset N           ai.onnx opset to write, 13..21 (default 17)
          --static-batch      fix the batch dimension to 1 instead of a symbolic "batch"
          --trace             export by tracing the forward pass (opset 17..21) instead of by module type; the
                              traced graph is replayed and checked against the model before it is written
        """;

    /// <summary>True when convert should export to ONNX (some positional argument is an .onnx file).</summary>
    public static bool Wants(IEnumerable<string> argv) => argv.Any(a => !a.StartsWith("--", StringComparison.Ordinal) && OnnxCommands.IsOnnx(a));

    public static int Convert(string[] argv)
    {
        var a = new Args(argv, new HashSet<string> { "--static-batch", "--trace" },
            new HashSet<string> { "--model", "--in-channels", "--image-size", "--num-classes", "--opset" });
        if (a.Positionals.Count != 2) throw new UsageException("expects CHECKPOINT and OUT.onnx");
        var (input, output) = (a.Positionals[0], a.Positionals[1]);
        if (OnnxCommands.IsOnnx(input)) throw new UsageException($"'{input}': converting from ONNX is not supported; use 'nabla run' to execute it");
        if (!OnnxCommands.IsOnnx(output)) throw new UsageException($"'{output}': the ONNX output must end in .onnx");
        var (weights, _, state) = Checkpoint.Load(input);
        var modelName = a.Get("--model") ?? (BuiltinModels.Names.Contains(state.Architecture) ? state.Architecture
            : throw new UsageException($"--model is required (the checkpoint records architecture '{state.Architecture}'; choose one of: {string.Join(", ", BuiltinModels.Names)})"));
        int inChannels = a.Int("--in-channels", 1), imageSize = a.Int("--image-size", 28);
        var net = BuiltinModels.Create(modelName, inChannels, imageSize, a.Int("--num-classes", 10));
        if (state.Architecture.Length > 0 && state.Architecture != modelName && state.Architecture != net.GetType().Name)
            throw new ModelFormatException($"checkpoint: {input} was written for architecture '{state.Architecture}', but --model is '{modelName}'");
        var task = new ClassificationTask(net, ps => new OptimizerConfig(new SGD(ps)), modelName);
        task.LoadStateDict(weights);
        int opset = a.Int("--opset", 17);
        bool dynamicBatch = !a.Has("--static-batch");
        if (a.Has("--trace"))
        {
            // A random example: zeros would leave ties (ReLU at 0, equal maxima) that hide tracing errors from the check.
            var example = Tensor.Randn([1, inChannels, imageSize, imageSize], generator: new Generator(0));
            net.ExportOnnx(output, [example], dynamicBatch ? null : new Dictionary<int, int>(), opset);
        }
        else OnnxExporter.Export(net, output, Tensor.Zeros([1, inChannels, imageSize, imageSize]), dynamicBatch, opset);
        Console.WriteLine($"wrote {output}: {modelName}, opset {opset}{(a.Has("--trace") ? ", traced" : "")}, input [{(dynamicBatch ? "batch" : "1")}, {inChannels}, {imageSize}, {imageSize}], {net.NumParameters():N0} parameters");
        return 0;
    }
}
