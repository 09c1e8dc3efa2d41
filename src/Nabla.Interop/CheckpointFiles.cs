using Nabla.IO;

namespace Nabla.Interop;

/// <summary>Tensor files by extension: .safetensors, or a PyTorch checkpoint (.pt, .pth, .bin).</summary>
public static class CheckpointFiles
{
    /// <summary>True for the extensions of torch.save files: .pt, .pth, .bin (and .ckpt).</summary>
    public static bool IsPyTorch(string path) =>
        Path.GetExtension(path).ToLowerInvariant() is ".pt" or ".pth" or ".bin" or ".ckpt";

    public static bool IsSafeTensors(string path) =>
        Path.GetExtension(path).Equals(".safetensors", StringComparison.OrdinalIgnoreCase);

    /// <summary>True for a sharded safetensors checkpoint's index, <c>*.safetensors.index.json</c>.</summary>
    public static bool IsSafeTensorsIndex(string path) =>
        path.EndsWith(".safetensors.index.json", StringComparison.OrdinalIgnoreCase);

    /// <summary>
    /// A shard size as transformers' <c>max_shard_size</c> writes it: bytes ("1000000"), or a number with KB, MB, GB
    /// (powers of 1000) or KiB, MiB, GiB (powers of 1024). Null when the text is not such a size or not positive.
    /// </summary>
    public static long? ParseShardSize(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        string t = text.Trim().ToUpperInvariant();
        (string Suffix, long Factor)[] units = [("KIB", 1L << 10), ("MIB", 1L << 20), ("GIB", 1L << 30), ("KB", 1000), ("MB", 1000_000), ("GB", 1000_000_000), ("B", 1)];
        long factor = 1;
        foreach (var (suffix, f) in units)
        {
            if (t.EndsWith(suffix, StringComparison.Ordinal)) { t = t[..^suffix.Length].TrimEnd(); factor = f; break; }
        }
        if (!double.TryParse(t, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double v)
            || !double.IsFinite(v) || v <= 0 || v * factor >= long.MaxValue) return null;
        long bytes = (long)(v * factor);
        return bytes > 0 ? bytes : null;
    }

    /// <summary>The named tensors of a .safetensors file (or sharded index) or of a PyTorch checkpoint's state dict.</summary>
    public static Dictionary<string, Tensor> LoadTensors(string path)
    {
        if (IsSafeTensors(path) || IsSafeTensorsIndex(path)) return SafeTensors.Load(path);
        if (IsPyTorch(path)) return PyTorchCheckpoint.LoadStateDict(path);
        throw new ModelFormatException($"{path}: unknown tensor file extension '{Path.GetExtension(path)}' (expected .safetensors, .safetensors.index.json, .pt, .pth or .bin)");
    }

    /// <summary>Writes named tensors as .safetensors or as a torch.save zip checkpoint, chosen by extension.</summary>
    public static void SaveTensors(string path, IReadOnlyDictionary<string, Tensor> tensors)
    {
        if (IsSafeTensors(path)) SafeTensors.Save(path, tensors);
        else if (IsPyTorch(path)) PyTorchCheckpoint.Save(path, tensors);
        else throw new ModelFormatException($"{path}: unknown tensor file extension '{Path.GetExtension(path)}' (expected .safetensors, .pt, .pth or .bin)");
    }

    /// <summary>
    /// Loads the tensors of <paramref name="path"/> (.safetensors, a sharded <c>*.safetensors.index.json</c>, or a
    /// PyTorch checkpoint) into <paramref name="module"/> with <see cref="Nabla.NN.Module.LoadStateDict"/>: a missing or
    /// unexpected key (when strict), a shape or a dtype that disagrees with the module throws
    /// <see cref="ModelFormatException"/> naming the file and the tensor.
    /// </summary>
    public static (List<string> Missing, List<string> Unexpected) LoadInto(Nabla.NN.Module module, string path, bool strict = true)
    {
        ArgumentNullException.ThrowIfNull(module);
        return module.LoadStateDict(LoadTensors(path), strict, source: path);
    }

    /// <summary>
    /// Converts <paramref name="input"/> to a sharded safetensors checkpoint in <paramref name="folder"/>
    /// (see <see cref="SafeTensors.SaveSharded"/>). Returns the paths written.
    /// </summary>
    public static IReadOnlyList<string> ConvertSharded(string input, string folder, long maxShardBytes)
    {
        return SafeTensors.SaveSharded(folder, LoadTensors(input), maxShardBytes);
    }

    /// <summary>Converts between formats, keeping every tensor's name, dtype, shape and bytes. Returns the tensor count.</summary>
    public static int Convert(string input, string output)
    {
        var tensors = LoadTensors(input);
        SaveTensors(output, tensors);
        return tensors.Count;
    }
}
