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

    /// <summary>The named tensors of a .safetensors file or of a PyTorch checkpoint's state dict.</summary>
    public static Dictionary<string, Tensor> LoadTensors(string path)
    {
        if (IsSafeTensors(path)) return SafeTensors.Load(path);
        if (IsPyTorch(path)) return PyTorchCheckpoint.LoadStateDict(path);
        throw new ModelFormatException($"{path}: unknown tensor file extension '{Path.GetExtension(path)}' (expected .safetensors, .pt, .pth or .bin)");
    }

    /// <summary>Writes named tensors as .safetensors or as a torch.save zip checkpoint, chosen by extension.</summary>
    public static void SaveTensors(string path, IReadOnlyDictionary<string, Tensor> tensors)
    {
        if (IsSafeTensors(path)) SafeTensors.Save(path, tensors);
        else if (IsPyTorch(path)) PyTorchCheckpoint.Save(path, tensors);
        else throw new ModelFormatException($"{path}: unknown tensor file extension '{Path.GetExtension(path)}' (expected .safetensors, .pt, .pth or .bin)");
    }

    /// <summary>Converts between formats, keeping every tensor's name, dtype, shape and bytes. Returns the tensor count.</summary>
    public static int Convert(string input, string output)
    {
        var tensors = LoadTensors(input);
        SaveTensors(output, tensors);
        return tensors.Count;
    }
}
