using System.Buffers.Binary;
using System.Text;
using Nabla.IO;
using Xunit;

namespace Nabla.Interop.Tests;

/// <summary>The memory-mapped reader: zero-copy views, one-copy materialization, validation before any data is touched.</summary>
public sealed class SafeTensorsMappedTests : IDisposable
{
    readonly Fixtures.TempDir dir = new();

    public void Dispose() => dir.Dispose();

    static Dictionary<string, Tensor> AllDTypes()
    {
        Tensor.ManualSeed(11);
        return new Dictionary<string, Tensor>
        {
            ["f32"] = Tensor.Randn(3, 5),
            ["f64"] = Tensor.FromArray(new[] { 1.5, -0.0, double.NaN, 1e-300 }, 2, 2),
            ["f16"] = Tensor.FromArray(new[] { (Half)1.5f, (Half)(-2f), Half.Epsilon }, 3),
            ["bf16"] = Tensor.FromArray(new[] { BFloat16.FromBits(0x3FC0), BFloat16.FromBits(0xFF80) }, 2),
            ["i64"] = Tensor.FromArray(new[] { long.MinValue, -1L, long.MaxValue }, 3),
            ["i32"] = Tensor.FromArray(new[] { int.MinValue, 7 }, 2, 1),
            ["i8"] = Tensor.FromArray(new sbyte[] { -128, 0, 127 }, 3),
            ["u8"] = Tensor.FromArray(new byte[] { 0, 1, 255, 128 }, 2, 2),
            ["bool"] = Tensor.FromArray(new[] { true, false, true }, 3),
            ["empty"] = Tensor.Zeros([0, 3]),
        };
    }

    /// <summary>A file made of an explicit header (padded to 8 with spaces) and data buffer.</summary>
    string Write(string name, string header, byte[] data, long? declaredLength = null)
    {
        header += new string(' ', (8 - Encoding.UTF8.GetByteCount(header) % 8) % 8);
        var h = Encoding.UTF8.GetBytes(header);
        var bytes = new byte[8 + h.Length + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)(declaredLength ?? h.Length));
        h.CopyTo(bytes, 8);
        data.CopyTo(bytes, 8 + h.Length);
        var p = dir.File(name);
        File.WriteAllBytes(p, bytes);
        return p;
    }

    [Fact]
    public void ViewsAreTheFileBytesOfEveryDType()
    {
        var tensors = AllDTypes();
        var p = dir.File("all.safetensors");
        SafeTensors.Save(p, tensors);
        var raw = File.ReadAllBytes(p);
        using var f = SafeTensorsFile.Open(p);
        Assert.Equal(raw.Length, f.FileLength);
        Assert.Equal(tensors.Count, f.Tensors.Count);
        foreach (var info in f.Tensors)
        {
            var expected = tensors[info.Name].ToBytes();
            var fromFile = raw.AsSpan((int)(f.Header.DataStart + info.Begin), (int)(info.End - info.Begin));
            Assert.True(f.GetBytes(info.Name).SequenceEqual(expected), info.Name);
            Assert.True(f.GetBytes(info.Name).SequenceEqual(fromFile), info.Name);
            Assert.True(f.GetMemory(info.Name).Span.SequenceEqual(expected), info.Name);
        }
        Assert.Equal(tensors["f32"].ToArray<float>(), f.GetElements<float>("f32").ToArray());
        Assert.Equal(tensors["f64"].ToArray<double>(), f.GetElements<double>("f64").ToArray());
        Assert.Equal(tensors["f16"].ToArray<Half>(), f.GetElements<Half>("f16").ToArray());
        Assert.Equal(tensors["bf16"].ToArray<BFloat16>(), f.GetElements<BFloat16>("bf16").ToArray());
        Assert.Equal(tensors["i64"].ToArray<long>(), f.GetElements<long>("i64").ToArray());
        Assert.Equal(tensors["i32"].ToArray<int>(), f.GetElements<int>("i32").ToArray());
        Assert.Equal(tensors["i8"].ToArray<sbyte>(), f.GetElements<sbyte>("i8").ToArray());
        Assert.Equal(tensors["u8"].ToArray<byte>(), f.GetElements<byte>("u8").ToArray());
        Assert.Equal(tensors["bool"].ToArray<bool>(), f.GetElements<bool>("bool").ToArray());
        Assert.Equal(0, f.GetElements<float>("empty").Length);
    }

    [Fact]
    public void LoadTensorCopiesOnceIntoAnIndependentTensor()
    {
        var tensors = AllDTypes();
        var p = dir.File("all.safetensors");
        SafeTensors.Save(p, tensors);
        Dictionary<string, Tensor> loaded;
        Tensor f32;
        using (var f = SafeTensorsFile.Open(p))
        {
            loaded = f.LoadAll();
            f32 = f.LoadTensor("f32");
            Assert.Equal(tensors["f32"].ToArray<float>(), f.GetElements<float>("f32").ToArray());
        }
        // The tensors outlive the mapping and do not alias each other or the file.
        Fixtures.AssertSameTensors(tensors, loaded);
        f32.Fill_(0.0);
        Assert.Equal(tensors["f32"].ToArray<float>(), loaded["f32"].ToArray<float>());
        Fixtures.AssertSameTensors(tensors, SafeTensors.Load(p));
    }

    [Fact]
    public void ViewsRefuseUseAfterDispose()
    {
        var p = dir.File("a.safetensors");
        SafeTensors.Save(p, new Dictionary<string, Tensor> { ["a"] = Tensor.Ones(4) });
        var f = SafeTensorsFile.Open(p);
        var memory = f.GetMemory("a");
        Assert.Equal(16, memory.Length);
        f.Dispose();
        f.Dispose();
        Assert.Throws<ObjectDisposedException>(() => memory.Span.Length);
        Assert.Throws<ObjectDisposedException>(() => f.GetBytes("a").Length);
        Assert.Throws<ObjectDisposedException>(() => f.LoadTensor("a"));
    }

    [Fact]
    public void WrongElementTypeOrNameIsRefusedNamingTheTensor()
    {
        var p = dir.File("a.safetensors");
        SafeTensors.Save(p, new Dictionary<string, Tensor> { ["w"] = Tensor.Ones(2), ["n"] = Tensor.FromArray(new[] { 1L }, 1) });
        using var f = SafeTensorsFile.Open(p);
        var e = Assert.Throws<DTypeException>(() => f.GetElements<double>("w").Length);
        Assert.Contains("'w'", e.Message);
        Assert.Contains("F32", e.Message);
        Assert.Throws<DTypeException>(() => f.GetElements<int>("n").Length);
        var k = Assert.Throws<KeyNotFoundException>(() => f.GetBytes("nope").Length);
        Assert.Contains("nope", k.Message);
        Assert.Contains("a.safetensors", k.Message);
        Assert.Throws<ArgumentException>(() => f.GetElements<decimal>("w").Length);
    }

    [Fact]
    public void DTypesWithoutANablaTypeAreViewableButNotMaterialized()
    {
        byte[] data = new byte[8];
        BinaryPrimitives.WriteUInt16LittleEndian(data, 65535);
        BinaryPrimitives.WriteUInt16LittleEndian(data.AsSpan(2), 2);
        BinaryPrimitives.WriteUInt32LittleEndian(data.AsSpan(4), 0xDEADBEEF);
        var p = Write("u.safetensors", """{"a":{"dtype":"F8_E5M2","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U32","shape":[1],"data_offsets":[4,8]}}""", data);
        using var f = SafeTensorsFile.Open(p);
        Assert.Equal(new byte[] { 0xFF, 0xFF, 2, 0 }, f.GetBytes("a").ToArray());
        Assert.Equal(new uint[] { 0xDEADBEEF }, f.GetElements<uint>("b").ToArray());
        Assert.Equal(new uint[] { 0xDEADBEEF }, f.LoadTensor("b").ToArray<uint>());
        var e = Assert.Throws<ModelFormatException>(() => f.LoadTensor("a"));
        Assert.Contains("tensor 'a'", e.Message);
        Assert.Contains("F8_E5M2", e.Message);
    }

    [Fact]
    public void BoolViewChecksItsBytes()
    {
        var p = Write("b.safetensors", """{"x":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]}}""", [0, 2, 1]);
        using var f = SafeTensorsFile.Open(p);
        var e = Assert.Throws<ModelFormatException>(() => f.GetElements<bool>("x").Length);
        Assert.Contains("tensor 'x'", e.Message);
        Assert.Equal(new byte[] { 0, 2, 1 }, f.GetElements<byte>("x").ToArray());
        Assert.Equal(new[] { false, true, true }, f.LoadTensor("x").ToArray<bool>());
    }

    public static TheoryData<string, string, int, long?, string> BadFiles() => new()
    {
        // name, header, data bytes, declared header length, expected message part
        { "headerpastend", """{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", 8, 90_000_000, "runs past the end" },
        { "offsetspastend", """{"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}""", 8, null, "run past the end" },
        { "hugeoffsets", """{"x":{"dtype":"U8","shape":[2000000000],"data_offsets":[0,2000000000]}}""", 8, null, "run past the end" },
        { "overlap", """{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"y":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}""", 12, null, "overlap" },
        { "hole", """{"x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""", 8, null, "hole" },
        { "sizemismatch", """{"x":{"dtype":"F64","shape":[2],"data_offsets":[0,8]}}""", 8, null, "needs 16 bytes" },
    };

    [Theory]
    [MemberData(nameof(BadFiles))]
    public void OpenRefusesBadLayoutsBeforeMappingOrAllocatingClaimedSizes(string name, string header, int dataBytes, long? declared, string part)
    {
        var p = Write(name + ".safetensors", header, new byte[dataBytes], declared);
        long before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.Throws<ModelFormatException>(() => SafeTensorsFile.Open(p).Dispose());
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Contains(name + ".safetensors", e.Message);
        Assert.Contains(part, e.Message);
        // The claims are 90 MB of header or 2 GB of tensor; what was allocated is the size of the real file and bookkeeping.
        Assert.True(allocated < 1_000_000, $"{allocated} bytes allocated while refusing {name}");
    }

    [Fact]
    public void EveryTruncationIsAModelFormatExceptionFromOpen()
    {
        var p = dir.File("full.safetensors");
        SafeTensors.Save(p, new Dictionary<string, Tensor> { ["x"] = Tensor.Ones(4, 4), ["y"] = Tensor.Ones(3) });
        var bytes = File.ReadAllBytes(p);
        var q = dir.File("trunc.safetensors");
        for (int len = 0; len < bytes.Length; len++)
        {
            File.WriteAllBytes(q, bytes[..len]);
            var e = Assert.Throws<ModelFormatException>(() => SafeTensorsFile.Open(q).Dispose());
            Assert.Contains("trunc.safetensors", e.Message);
        }
    }

    [Fact]
    public void HeaderOnlyFileOpens()
    {
        var p = dir.File("none.safetensors");
        SafeTensors.Save(p, new Dictionary<string, Tensor>(), new Dictionary<string, string> { ["k"] = "v" });
        using var f = SafeTensorsFile.Open(p);
        Assert.Empty(f.Tensors);
        Assert.Equal("v", f.Metadata["k"]);
        Assert.Empty(f.LoadAll());
    }
}
