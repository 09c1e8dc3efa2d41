using System.IO.Compression;
using System.Text;
using Xunit;

namespace Nabla.Interop.Tests;

/// <summary>
/// Views whose materialized size is not bounded by their storage: an expanded tensor stays a stride-0 view (so a
/// small file cannot make Nabla allocate its claimed size), and a self-overlapping view larger than its storage is
/// refused by name. Both are made by patching size and stride tuples in strided.pt's pickle.
/// </summary>
public sealed class PyTorchViewTests : IDisposable
{
    readonly Fixtures.TempDir tmp = new();

    public void Dispose() => tmp.Dispose();

    string Patched(string name, params (string From, byte[] To)[] patches)
    {
        var ms = new MemoryStream();
        using (var src = ZipFile.OpenRead(Fixtures.Generated("strided.pt")))
        using (var dst = new ZipArchive(ms, ZipArchiveMode.Create, leaveOpen: true))
        {
            foreach (var e in src.Entries)
            {
                using var input = e.Open();
                var data = new MemoryStream();
                input.CopyTo(data);
                var bytes = data.ToArray();
                if (e.FullName.EndsWith("data.pkl", StringComparison.Ordinal))
                {
                    foreach (var (from, to) in patches)
                    {
                        var pattern = Encoding.Latin1.GetBytes(from);
                        int at = bytes.AsSpan().IndexOf(pattern);
                        Assert.True(at > 0, $"pattern {from} not found");
                        Assert.True(bytes.AsSpan(at + 1).IndexOf(pattern) < 0, $"pattern {from} is not unique");
                        bytes = [.. bytes[..at], .. to, .. bytes[(at + pattern.Length)..]];
                    }
                }
                using var output = dst.CreateEntry(e.FullName, CompressionLevel.NoCompression).Open();
                output.Write(bytes);
            }
        }
        var path = tmp.File(name);
        File.WriteAllBytes(path, ms.ToArray());
        return path;
    }

    [Fact]
    public void ExpandedTensorStaysAViewOfItsStorage()
    {
        // "expanded" is torch.tensor([1., 2., 3.]).expand(4, 3): size (4, 3), stride (0, 1). Claim 2^24 rows instead,
        // 201 MB if copied out, from a file of a few kilobytes.
        const int rows = 1 << 24;
        var path = Patched("expanded.pt", ("K\u0004K\u0003\u0086", [(byte)'J', 0, 0, 0, 1, (byte)'K', 3, 0x86]));
        Assert.True(new FileInfo(path).Length < 100_000);
        long before = GC.GetAllocatedBytesForCurrentThread();
        var sd = PyTorchCheckpoint.LoadStateDict(path);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        var t = sd["expanded"];
        Assert.Equal([rows, 3], t.Shape);
        Assert.Equal(0, t.Strides[0]);
        Assert.Equal([1f, 2f, 3f], t.Select(0, 0).ToArray<float>());
        Assert.Equal([1f, 2f, 3f], t.Select(0, rows - 1).ToArray<float>());
        Assert.True(allocated < 20_000_000, $"{allocated} bytes allocated");
        // The untouched fixture still loads the 4-row expansion with the same values.
        var small = PyTorchCheckpoint.LoadStateDict(Fixtures.Generated("strided.pt"))["expanded"];
        Assert.Equal([1f, 2f, 3f, 1f, 2f, 3f, 1f, 2f, 3f, 1f, 2f, 3f], small.Contiguous().ToArray<float>());
    }

    [Fact]
    public void OverlappingViewLargerThanItsStorageIsRefusedByName()
    {
        // "transposed" is a (4, 6) tensor's .t(): size (6, 4), stride (1, 6) over 24 elements. Size (20, 4) with
        // stride (1, 1) stays inside the storage (last element 22) but holds 80 elements of 24.
        var path = Patched("overlap.pt", ("K\u0006K\u0004\u0086", [(byte)'K', 20, (byte)'K', 4, 0x86]), ("K\u0001K\u0006\u0086", [(byte)'K', 1, (byte)'K', 1, 0x86]));
        var e = Assert.Throws<ModelFormatException>(() => PyTorchCheckpoint.LoadStateDict(path));
        Assert.Contains("overlap.pt: tensor 'transposed'", e.Message);
        Assert.Contains("overlaps itself", e.Message);
    }
}
