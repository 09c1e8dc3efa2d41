using Nabla.Data;
using SkiaSharp;
using Xunit;

namespace Nabla.Vision.Tests;

public class ImageFolderTests : IDisposable
{
    readonly string root = Path.Combine(Path.GetTempPath(), "nabla-imgfolder-" + Guid.NewGuid().ToString("N"));
    static string Data(string name) => Path.Combine(AppContext.BaseDirectory, "data", name);

    public void Dispose()
    {
        if (Directory.Exists(root)) Directory.Delete(root, true);
    }

    [Fact]
    public void ReadsRealJpegDigits()
    {
        var img = ImageIO.Read(Data("7.jpg"), grayscale: true);
        Assert.Equal(new[] { 28, 28, 1 }, img.Shape);
        Assert.Equal(DType.UInt8, img.DType);
        var px = img.ToArray<byte>();
        // A digit on a dark background: mostly dark pixels, and a bright stroke.
        Assert.True(px.Count(p => p < 50) > 28 * 28 / 2);
        Assert.True(px.Max() > 200);
    }

    [Fact]
    public void FolderOfClassesGivesSortedLabelsAndTensors()
    {
        foreach (var d in new[] { "7", "3", "5", "0" })
        {
            Directory.CreateDirectory(Path.Combine(root, "digit" + d));
            File.Copy(Data(d + ".jpg"), Path.Combine(root, "digit" + d, d + ".jpg"));
        }
        // A PNG written by Skia, to read a second format.
        using (var bmp = new SKBitmap(5, 4))
        {
            bmp.Erase(new SKColor(255, 0, 0));
            using var png = bmp.Encode(SKEncodedImageFormat.Png, 100);
            File.WriteAllBytes(Path.Combine(root, "digit0", "red.png"), png.ToArray());
        }
        File.WriteAllText(Path.Combine(root, "digit3", "notes.txt"), "not an image");
        var ds = new ImageFolder(root);
        Assert.Equal(new[] { "digit0", "digit3", "digit5", "digit7" }, ds.Classes);
        Assert.Equal(5, ds.Count);
        var (x, y) = ds[0];
        Assert.Equal(new[] { 3, 28, 28 }, x.Shape);
        Assert.Equal(0L, y.ToArray<long>()[0]);
        var red = Enumerable.Range(0, ds.Count).Select(i => ds[i]).Single(b => b.Input.Size(1) == 4);
        Assert.Equal(new[] { 3, 4, 5 }, red.Input.Shape);
        Assert.Equal(1f, red.Input.Select(0, 0).Max().ItemFloat());
        Assert.Equal(0f, red.Input.Select(0, 1).Max().ItemFloat());
        Assert.Equal(3L, ds[ds.Count - 1].Target.ToArray<long>()[0]);
        var loader = DataLoader.Create(new Subset<Batch>(ds, [0, 2, 3, 4]), 2);
        Assert.Equal(new[] { 2, 3, 28, 28 }, loader.First().Input.Shape);
    }

    [Fact]
    public void CorruptAndTruncatedImagesNameTheFile()
    {
        Directory.CreateDirectory(root);
        var bad = Path.Combine(root, "bad.jpg");
        File.WriteAllText(bad, "this is not a jpeg");
        var e = Assert.Throws<DataFormatException>(() => ImageIO.Read(bad));
        Assert.Contains(bad, e.Message);
        var bytes = File.ReadAllBytes(Data("3.jpg"));
        var cut = Path.Combine(root, "cut.jpg");
        File.WriteAllBytes(cut, bytes[..(bytes.Length / 2)]);
        var e2 = Assert.Throws<DataFormatException>(() => ImageIO.Read(cut));
        Assert.Contains(cut, e2.Message);
        Assert.Throws<DataFormatException>(() => new ImageFolder(Path.Combine(root, "missing")));
    }
}
