using Nabla.Interop;
using Nabla.IO;

namespace Nabla.Cli;

/// <summary>The verbs that read and write other frameworks' files: convert, and inspect of PyTorch checkpoints.</summary>
static class InteropCommands
{
    public const string ConvertHelp = """
        nabla convert IN OUT: convert a tensor file, keeping every tensor's name, dtype, shape and bytes.
        The formats follow the extensions: .safetensors, or a PyTorch checkpoint (.pt, .pth, .bin).
        A PyTorch input is loaded safely (no code runs); its state dict is found at the top level or under
        state_dict / model_state_dict / model. A PyTorch output is a torch.save zip archive (an OrderedDict).
        IN may also be a sharded model.safetensors.index.json.
        --max-shard-size SIZE: OUT is a folder; write model-0000i-of-0000N.safetensors shards of at most SIZE
        (bytes, or with KB/MB/GB, powers of 1000 as transformers counts) and model.safetensors.index.json.
        """ + "\n\n" + OnnxExportCommands.Help + "\n\n" + GraphFileCommands.Help;

    public static int Convert(string[] argv)
    {
        if (GraphFileCommands.Wants(argv)) return GraphFileCommands.Convert(argv);
        if (OnnxExportCommands.Wants(argv)) return OnnxExportCommands.Convert(argv);
        var a = new Args(argv, new HashSet<string>(), new HashSet<string> { "--max-shard-size" });
        if (a.Positionals.Count != 2) throw new UsageException("expects IN and OUT");
        var (input, output) = (a.Positionals[0], a.Positionals[1]);
        if (!File.Exists(input)) throw new ModelFormatException($"convert: file not found: {input}");
        if (!CheckpointFiles.IsSafeTensors(input) && !CheckpointFiles.IsPyTorch(input) && !CheckpointFiles.IsSafeTensorsIndex(input))
            throw new UsageException($"unknown format of '{input}': use .safetensors, .safetensors.index.json, .pt, .pth or .bin");
        if (a.Get("--max-shard-size") is { } sizeText)
        {
            long max = CheckpointFiles.ParseShardSize(sizeText) ?? throw new UsageException($"option '--max-shard-size' expects a size such as 5GB, 500MB or 1000000, got '{sizeText}'");
            var files = CheckpointFiles.ConvertSharded(input, output, max);
            Console.WriteLine($"wrote {files.Count} file(s) in {output}: {string.Join(", ", files.Select(Path.GetFileName))}");
            return 0;
        }
        if (!CheckpointFiles.IsSafeTensors(output) && !CheckpointFiles.IsPyTorch(output))
            throw new UsageException($"unknown format of '{output}': use .safetensors, .pt, .pth or .bin");
        var tensors = CheckpointFiles.LoadTensors(input);
        CheckpointFiles.SaveTensors(output, tensors);
        long elements = tensors.Values.Sum(t => (long)t.NumElements);
        Console.WriteLine($"wrote {output}: {tensors.Count} tensors, {elements:N0} elements");
        return 0;
    }

    /// <summary>True when <paramref name="path"/> is a PyTorch checkpoint that inspect should read through Nabla.Interop.</summary>
    public static bool IsPyTorch(string path) => CheckpointFiles.IsPyTorch(path);

    public static int InspectPyTorch(string path)
    {
        var tensors = PyTorchCheckpoint.LoadStateDict(path);
        long total = 0;
        int nameWidth = Math.Max(4, tensors.Keys.Select(k => k.Length).DefaultIfEmpty(0).Max());
        Console.WriteLine($"{"name".PadRight(nameWidth)}  {"dtype",-8}  shape");
        foreach (var (k, t) in tensors)
        {
            Console.WriteLine($"{k.PadRight(nameWidth)}  {SafeTensors.DTypeName(t.DType),-8}  [{string.Join(", ", t.Shape)}]");
            total += t.NumElements;
        }
        Console.WriteLine($"{tensors.Count} tensors, {total:N0} parameters and buffers");
        return 0;
    }
}
