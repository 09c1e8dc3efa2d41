using Nabla.Data;
using SkiaSharp;

namespace Nabla.Vision;

/// <summary>Decodes image files (PNG, JPEG, BMP, GIF, WebP) into tensors.</summary>
public static class ImageIO
{
    /// <summary>
    /// Reads an image as uint8 [H, W, C] with C = 1 (grayscale) or 3 (RGB). Undecodable files throw
    /// <see cref="DataFormatException"/> naming the file.
    /// </summary>
    public static Tensor Read(string path, bool grayscale = false)
    {
        if (!File.Exists(path)) throw new DataFormatException($"image: file not found: {path}");
        using var data = SKData.Create(path) ?? throw new DataFormatException($"image: cannot read {path}");
        using var codec = SKCodec.Create(data);
        if (codec is null) throw new DataFormatException($"image: {path} is not a supported image (PNG, JPEG, BMP, GIF, WebP) or is corrupt");
        var info = new SKImageInfo(codec.Info.Width, codec.Info.Height, SKColorType.Rgba8888, SKAlphaType.Unpremul);
        using var bitmap = new SKBitmap(info);
        var result = codec.GetPixels(info, bitmap.GetPixels());
        if (result is not (SKCodecResult.Success or SKCodecResult.IncompleteInput))
            throw new DataFormatException($"image: {path} could not be decoded ({result})");
        if (result == SKCodecResult.IncompleteInput)
            throw new DataFormatException($"image: {path} is truncated");
        int w = info.Width, h = info.Height, c = grayscale ? 1 : 3;
        var rgba = bitmap.Bytes;
        var pixels = new byte[h * w * c];
        for (int i = 0; i < h * w; i++)
        {
            byte r = rgba[4 * i], g = rgba[4 * i + 1], b = rgba[4 * i + 2];
            if (grayscale) pixels[i] = (byte)Math.Round(0.299 * r + 0.587 * g + 0.114 * b);
            else { pixels[3 * i] = r; pixels[3 * i + 1] = g; pixels[3 * i + 2] = b; }
        }
        return Tensor.FromArray(pixels, h, w, c);
    }
}

/// <summary>
/// torchvision's ImageFolder: root/&lt;class&gt;/&lt;image&gt; with classes sorted by name (ordinal) and labelled 0..K-1.
/// Samples are float32 [C, H, W] in [0, 1] (ToTensor), optionally resized-by-crop through a transform.
/// </summary>
public sealed class ImageFolder : IDataset<Batch>
{
    static readonly string[] Extensions = [".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"];
    readonly (string path, int label)[] samples;
    readonly bool grayscale;
    readonly Func<Tensor, Tensor>? transform;

    public IReadOnlyList<string> Classes { get; }

    public ImageFolder(string root, bool grayscale = false, Func<Tensor, Tensor>? transform = null)
    {
        if (!Directory.Exists(root)) throw new DataFormatException($"image_folder: directory not found: {root}");
        Classes = Directory.GetDirectories(root).Select(Path.GetFileName).OfType<string>().OrderBy(n => n, StringComparer.Ordinal).ToArray();
        if (Classes.Count == 0) throw new DataFormatException($"image_folder: {root} has no class folders");
        var list = new List<(string, int)>();
        for (int k = 0; k < Classes.Count; k++)
        {
            var files = Directory.EnumerateFiles(Path.Combine(root, Classes[k]), "*", SearchOption.AllDirectories)
                .Where(f => Extensions.Contains(Path.GetExtension(f).ToLowerInvariant()))
                .OrderBy(f => f, StringComparer.Ordinal);
            foreach (var f in files) list.Add((f, k));
        }
        if (list.Count == 0) throw new DataFormatException($"image_folder: no images ({string.Join(", ", Extensions)}) under {root}");
        samples = list.ToArray();
        this.grayscale = grayscale;
        this.transform = transform;
    }

    public int Count => samples.Length;

    public Batch this[int index]
    {
        get
        {
            var (path, label) = samples[index];
            var x = Transforms.ToTensor(ImageIO.Read(path, grayscale));
            if (transform is not null) x = transform(x);
            return new Batch(x, Tensor.Scalar(label, DType.Int64));
        }
    }

    public string PathOf(int index) => samples[index].path;
}
