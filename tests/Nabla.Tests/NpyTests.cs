using Nabla.IO;
using Xunit;

namespace Nabla.Tests;

/// <summary>.npy files written by NumPy (tools/fixtures/make_npy_fixtures.py) and Nabla's writer read back by the reader.</summary>
public class NpyTests
{
    static string F(string name) => Path.Combine(AppContext.BaseDirectory, "fixtures", "npy", name);

    [Fact]
    public void ReadsNumpyFiles()
    {
        var a = Npy.Load(F("f32_2x3.npy"));
        Assert.Equal(new[] { 2, 3 }, a.Shape);
        Assert.Equal(new float[] { 0, 0.25f, 0.5f, 0.75f, 1, 1.25f }, a.ToArray<float>());
        var f = Npy.Load(F("f64_fortran_3x4.npy"));
        Assert.Equal(new[] { 3, 4 }, f.Shape);
        Assert.Equal(Enumerable.Range(0, 12).Select(i => (double)i).ToArray(), f.ToArray<double>());
        Assert.Equal(new[] { -2, -1, 0, 1, 2 }, Npy.Load(F("i32_be_5.npy")).ToArray<int>());
        var s = Npy.Load(F("i64_scalar.npy"));
        Assert.Empty(s.Shape);
        Assert.Equal(42L, s.ToArray<long>()[0]);
        Assert.Equal(new[] { true, false, false, true }, Npy.Load(F("bool_4.npy")).ToArray<bool>());
        Assert.Equal(new byte[] { 0, 1, 2, 3, 4, 5, 6, 7 }, Npy.Load(F("u8_2x2x2.npy")).ToArray<byte>());
        Assert.Equal(new[] { 0.5f, -1.25f, 3f }, Npy.Load(F("f16_3.npy")).ToFloatArray());
    }

    [Fact]
    public void RefusesObjectArraysAndCorruptFiles()
    {
        var e = Assert.Throws<ModelFormatException>(() => Npy.Load(F("object.npy")));
        Assert.Contains("not supported", e.Message);
        var bytes = File.ReadAllBytes(F("f32_2x3.npy"));
        var cut = Path.GetTempFileName();
        try
        {
            File.WriteAllBytes(cut, bytes[..^3]);
            var e2 = Assert.Throws<ModelFormatException>(() => Npy.Load(cut));
            Assert.Contains("needs 24 data bytes", e2.Message);
            File.WriteAllBytes(cut, bytes[..9]);
            Assert.Throws<ModelFormatException>(() => Npy.Load(cut));
            File.WriteAllBytes(cut, "not npy at all"u8.ToArray());
            Assert.Contains("bad magic", Assert.Throws<ModelFormatException>(() => Npy.Load(cut)).Message);
        }
        finally { File.Delete(cut); }
    }

    [Fact]
    public void WriterRoundTripsAndMatchesNumpyLayout()
    {
        var path = Path.GetTempFileName();
        try
        {
            var t = Tensor.Arange(0, 12).Reshape(3, 4).To(DType.Float32).T;   // non-contiguous on purpose
            Npy.Save(path, t);
            var bytes = File.ReadAllBytes(path);
            Assert.Equal(0, (bytes.Length - 12 * 4) % 64);                    // data starts 64-byte aligned, as numpy writes
            var back = Npy.Load(path);
            Assert.Equal(new[] { 4, 3 }, back.Shape);
            Assert.Equal(t.ToArray<float>(), back.ToArray<float>());
            // Nabla's header equals NumPy's for the same array.
            var numpy = File.ReadAllBytes(F("f32_2x3.npy"));
            Npy.Save(path, Tensor.FromArray(new float[] { 0, 0.25f, 0.5f, 0.75f, 1, 1.25f }, 2, 3));
            Assert.Equal(numpy, File.ReadAllBytes(path));
        }
        finally { File.Delete(path); }
    }
}
