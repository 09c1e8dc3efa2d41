namespace Nabla.Data;

/// <summary>Image transforms on [C, H, W] (or batched [N, C, H, W]) float tensors, like torchvision.transforms.</summary>
public static class Transforms
{
    /// <summary>uint8 pixels [H, W] or [H, W, C] → float32 [C, H, W] in [0, 1].</summary>
    public static Tensor ToTensor(Tensor image)
    {
        var x = image.To(DType.Float32).Div(255.0);
        return image.Dim == 2 ? x.Unsqueeze(0) : x.Permute(2, 0, 1).Contiguous();
    }

    /// <summary>uint8 values → float32 in [0, 1] (v / 255) in a single pass, same shape.</summary>
    public static Tensor BytesToUnitFloat(Tensor bytes)
    {
        if (bytes.DType != DType.UInt8) throw new DTypeException($"bytes_to_unit_float: expects uint8, got {bytes.DType.TorchName()}");
        var src = bytes.ContiguousData<byte>();
        var dst = new float[bytes.NumElements];
        for (int i = 0; i < dst.Length; i++) dst[i] = src[i] / 255f;
        return new Tensor(new Storage(dst, DType.Float32), bytes.Shape);
    }

    /// <summary>(x - mean[c]) / std[c] per channel.</summary>
    public static Tensor Normalize(Tensor x, double[] mean, double[] std)
    {
        int cdim = x.Dim - 3;
        if (cdim < 0 || x.Size(cdim) != mean.Length || mean.Length != std.Length)
            throw new ShapeMismatchException($"normalize: {mean.Length} means and {std.Length} stds do not match the channels of {ShapeUtil.Format(x.shape)}");
        var shape = Enumerable.Repeat(1, x.Dim).ToArray();
        shape[cdim] = mean.Length;
        var m = Tensor.FromArray(mean.Select(v => (float)v).ToArray(), shape).To(x.DType);
        var s = Tensor.FromArray(std.Select(v => (float)v).ToArray(), shape).To(x.DType);
        return x.Sub(m).Div(s);
    }

    /// <summary>Pads by <paramref name="padding"/> zeros on each side, then crops a random size×size window.</summary>
    public static Tensor RandomCrop(Tensor x, int size, int padding = 0, Generator? g = null)
    {
        g ??= Generator.Default;
        var p = padding > 0 ? Functional.Pad(x, [padding, padding, padding, padding]) : x;
        int h = p.Size(-2), w = p.Size(-1);
        if (size > h || size > w) throw new ShapeMismatchException($"random_crop: crop size {size} is larger than the padded image {h}x{w}");
        int top = (int)g.NextLong(0, h - size + 1), left = (int)g.NextLong(0, w - size + 1);
        return p.Slice(-2, top, top + size).Slice(-1, left, left + size);
    }

    /// <summary>Flips the last dimension with probability p.</summary>
    public static Tensor RandomHorizontalFlip(Tensor x, double p = 0.5, Generator? g = null)
    {
        g ??= Generator.Default;
        return g.NextDouble() < p ? x.Flip(-1) : x;
    }
}
