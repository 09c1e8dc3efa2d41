using System.Buffers.Binary;
using System.Text;
using Nabla.IO;
using Xunit;

namespace Nabla.Tests;

public sealed class SafeTensorsTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("nabla-st-").FullName;

    public void Dispose() => Directory.Delete(dir, recursive: true);

    static string Fixture(params string[] parts) => Path.Combine([AppContext.BaseDirectory, "fixtures", .. parts]);

    string TempPath(string name) => Path.Combine(dir, name);

    /// <summary>A file made of an explicit header (padded to 8 with spaces) and data buffer.</summary>
    string Write(string name, string header, byte[] data, long? declaredLength = null)
    {
        var h = Encoding.UTF8.GetBytes(header);
        var bytes = new byte[8 + h.Length + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)(declaredLength ?? h.Length));
        h.CopyTo(bytes, 8);
        data.CopyTo(bytes, 8 + h.Length);
        var p = TempPath(name);
        File.WriteAllBytes(p, bytes);
        return p;
    }

    static Dictionary<string, Tensor> AllDTypes()
    {
        Tensor.ManualSeed(7);
        var f = Tensor.Randn(3, 4);
        return new Dictionary<string, Tensor>
        {
            ["f32"] = f,
            ["f64"] = Tensor.FromArray(new[] { 1.5, -0.0, double.NaN, double.PositiveInfinity, 1e-300, Math.PI }, 2, 3),
            ["f16"] = Tensor.FromArray(new[] { (Half)1.5f, (Half)(-2f), Half.NaN, Half.Epsilon, Half.MaxValue }, 5),
            ["bf16"] = Tensor.FromArray(new[] { BFloat16.FromBits(0x3FC0), BFloat16.FromBits(0xFF80), BFloat16.FromBits(0x7FC1), BFloat16.FromBits(1) }, 2, 2),
            ["i64"] = Tensor.FromArray(new[] { long.MinValue, -1L, 0L, long.MaxValue }, 4),
            ["i32"] = Tensor.FromArray(new[] { int.MinValue, 7, int.MaxValue }, 3, 1),
            ["i8"] = Tensor.FromArray(new sbyte[] { -128, 0, 127 }, 3),
            ["u8"] = Tensor.FromArray(new byte[] { 0, 1, 255, 128 }, 2, 2),
            ["bool"] = Tensor.FromArray(new[] { true, false, true }, 3),
            ["scalar"] = Tensor.Scalar(3.25),
            ["empty"] = Tensor.Zeros([0, 3]),
        };
    }

    [Fact]
    public void RoundTripEveryDTypeIsBitIdentical()
    {
        var tensors = AllDTypes();
        var p = TempPath("all.safetensors");
        SafeTensors.Save(p, tensors);
        var loaded = SafeTensors.Load(p);
        Assert.Equal(tensors.Keys.Order(), loaded.Keys.Order());
        foreach (var (name, t) in tensors)
        {
            var l = loaded[name];
            Assert.Equal(t.DType, l.DType);
            Assert.Equal(t.Shape, l.Shape);
            Assert.Equal(t.ToBytes(), l.ToBytes());
        }
        // Save(Load(file)) reproduces the file byte for byte.
        var p2 = TempPath("again.safetensors");
        SafeTensors.Save(p2, loaded);
        Assert.Equal(File.ReadAllBytes(p), File.ReadAllBytes(p2));
        Assert.Equal(File.ReadAllBytes(p), SafeTensors.Serialize(tensors));
    }

    [Fact]
    public void WriterPadsHeaderAndOrdersLikeTheReference()
    {
        var p = TempPath("order.safetensors");
        SafeTensors.Save(p, new Dictionary<string, Tensor>
        {
            ["b"] = Tensor.Ones(2),
            ["a"] = Tensor.Ones(3),
            ["m"] = Tensor.Ones([2], DType.UInt8),
            ["z"] = Tensor.Ones([1], DType.Int64),
        });
        var bytes = File.ReadAllBytes(p);
        long n = (long)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        Assert.Equal(0, n % 8);
        var header = Encoding.UTF8.GetString(bytes, 8, (int)n);
        Assert.Equal(
            "{\"z\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]},\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[8,20]}," +
            "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[20,28]},\"m\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[28,30]}}",
            header.TrimEnd(' '));
    }

    [Fact]
    public void NonContiguousTensorsAreWrittenInRowMajorOrder()
    {
        var t = Tensor.Arange(6).Reshape(2, 3).Float().T;
        var p = TempPath("t.safetensors");
        SafeTensors.Save(p, new Dictionary<string, Tensor> { ["t"] = t });
        var l = SafeTensors.Load(p)["t"];
        Assert.Equal([3, 2], l.Shape);
        Assert.Equal(new float[] { 0, 3, 1, 4, 2, 5 }, l.ToArray<float>());
    }

    [Fact]
    public void MetadataRoundTrips()
    {
        var p = TempPath("md.safetensors");
        var md = new Dictionary<string, string> { ["format"] = "pt", ["note"] = "quote \" backslash \\ newline \n ünïcödé ✓" };
        SafeTensors.Save(p, new Dictionary<string, Tensor> { ["x"] = Tensor.Ones(2) }, md);
        var (tensors, metadata) = SafeTensors.LoadWithMetadata(p);
        Assert.Single(tensors);
        Assert.Equal(md, metadata);
        var header = SafeTensors.ReadHeader(p);
        Assert.Equal("pt", header.Metadata["format"]);
        Assert.Equal(DType.Float32, header.Tensors[0].DType);
        // metadata keys are sorted, so the bytes do not depend on dictionary order
        var p2 = TempPath("md2.safetensors");
        SafeTensors.Save(p2, tensors, new Dictionary<string, string> { ["note"] = md["note"], ["format"] = "pt" });
        Assert.Equal(File.ReadAllBytes(p), File.ReadAllBytes(p2));
    }

    [Fact]
    public void SaveReplacesAnExistingFileAndLeavesNoTempFiles()
    {
        var p = TempPath("w.safetensors");
        File.WriteAllText(p, "old");
        SafeTensors.Save(p, new Dictionary<string, Tensor> { ["x"] = Tensor.Ones(2) });
        Assert.Equal(new float[] { 1, 1 }, SafeTensors.Load(p)["x"].ToArray<float>());
        Assert.Equal(["w.safetensors"], Directory.GetFiles(dir).Select(Path.GetFileName));
    }

    [Fact]
    public void LoadsTorchSharpPyBridgeModule()
    {
        var path = Fixture("torchsharp-pybridge", "module_load.safetensors");
        var t = SafeTensors.Load(path);
        Assert.Equal(["lin1.weight", "lin2.weight"], t.Keys.Order());
        Assert.Equal([2, 5], t["lin1.weight"].Shape);
        Assert.Equal([2, 2], t["lin2.weight"].Shape);
        Assert.All(t["lin1.weight"].ToArray<float>(), v => Assert.Equal(1f, v));
        Assert.All(t["lin2.weight"].ToArray<float>(), v => Assert.Equal(2f, v));
        // forward(11 * ones(5)) through lin1 then lin2 = [220, 220]
        var y = Tensor.Full([5], 11).Matmul(t["lin1.weight"].T).Matmul(t["lin2.weight"].T);
        Assert.Equal(new float[] { 220, 220 }, y.ToArray<float>());
        // The Python writer's bytes are reproduced exactly.
        Assert.Equal(File.ReadAllBytes(path), SafeTensors.Serialize(t));
    }

    [Fact]
    public void LoadsTorchSharpPyBridgeTensors()
    {
        var path = Fixture("torchsharp-pybridge", "tensors.safetensors");
        var t = SafeTensors.Load(path);
        Assert.Equal(DType.Int64, t["arr"].DType);
        Assert.Equal(new long[] { 1, 2, 3, 4, 5, 6 }, t["arr"].ToArray<long>());
        Assert.Equal([2, 3], t["arr_2d"].Shape);
        Assert.Equal(new long[] { 1, 2, 3, 4, 5, 6 }, t["arr_2d"].ToArray<long>());
        Assert.Empty(SafeTensors.LoadWithMetadata(path).Metadata);
        Assert.Equal(File.ReadAllBytes(path), SafeTensors.Serialize(t));
    }

    [Fact]
    public void LoadsShardedCheckpoint()
    {
        SafeTensors.Save(TempPath("model-00001-of-00002.safetensors"), new Dictionary<string, Tensor>
        {
            ["a.weight"] = Tensor.Ones(2, 2),
            ["unlisted"] = Tensor.Ones(1),
        });
        SafeTensors.Save(TempPath("model-00002-of-00002.safetensors"), new Dictionary<string, Tensor> { ["b.bias"] = Tensor.Full([3], 2, DType.Float64) });
        File.WriteAllText(TempPath("model.safetensors.index.json"),
            """{"metadata": {"total_size": 40, "format": "pt"}, "weight_map": {"a.weight": "model-00001-of-00002.safetensors", "b.bias": "model-00002-of-00002.safetensors"}}""");
        var (t, md) = SafeTensors.LoadWithMetadata(TempPath("model.safetensors.index.json"));
        Assert.Equal(["a.weight", "b.bias"], t.Keys.Order());
        Assert.Equal(new double[] { 2, 2, 2 }, t["b.bias"].ToArray<double>());
        Assert.Equal("40", md["total_size"]);
        Assert.Equal("pt", md["format"]);
        // a folder resolves to its index
        Assert.Equal(2, SafeTensors.Load(dir).Count);
    }

    [Theory]
    [InlineData("../evil.safetensors")]
    [InlineData("/etc/evil.safetensors")]
    [InlineData("sub\\\\evil.safetensors")]
    [InlineData("C:evil.safetensors")]
    [InlineData("model.bin")]
    public void ShardNamesThatEscapeTheFolderAreRejected(string shard)
    {
        File.WriteAllText(TempPath("model.safetensors.index.json"), "{\"weight_map\": {\"w\": \"" + shard + "\"}}");
        var e = Assert.Throws<ModelFormatException>(() => SafeTensors.Load(TempPath("model.safetensors.index.json")));
        Assert.Contains("model.safetensors.index.json", e.Message);
        Assert.Contains("tensor 'w'", e.Message);
        Assert.Contains("shard name", e.Message);
    }

    [Fact]
    public void ShardMissingATensorIsReported()
    {
        SafeTensors.Save(TempPath("s1.safetensors"), new Dictionary<string, Tensor> { ["a"] = Tensor.Ones(1) });
        File.WriteAllText(TempPath("idx.safetensors.index.json"), """{"weight_map": {"a": "s1.safetensors", "b": "s1.safetensors"}}""");
        var e = Assert.Throws<ModelFormatException>(() => SafeTensors.Load(TempPath("idx.safetensors.index.json")));
        Assert.Contains("tensor 'b'", e.Message);
        Assert.Contains("s1.safetensors", e.Message);
    }

    static readonly byte[] Eight = new byte[8];

    public static TheoryData<string, string, byte[], long?, string[]> Corruptions() => new()
    {
        // name, header, data, declared header length (null = actual), expected message parts
        { "badjson", "{\"x\":{\"dtype\":\"F32\",", Eight, null, ["not valid JSON"] },
        { "notobject", "[1, 2]  ", Eight, null, ["does not start with '{'"] },
        { "unknowndtype", """{"x":{"dtype":"F17","shape":[2],"data_offsets":[0,8]}}""", Eight, null, ["tensor 'x'", "unknown dtype 'F17'"] },
        { "unsupported", """{"x":{"dtype":"F8_E4M3","shape":[8],"data_offsets":[0,8]}}""", Eight, null, ["tensor 'x'", "F8_E4M3 is not supported"] },
        { "mismatch", """{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}""", Eight, null, ["tensor 'x'", "needs 12 bytes", "hold 8"] },
        { "pastend", """{"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}""", Eight, null, ["tensor 'x'", "run past the end"] },
        { "reversed", """{"x":{"dtype":"U8","shape":[0],"data_offsets":[8,0]}}""", Eight, null, ["tensor 'x'", "end before they begin"] },
        { "overlap", """{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"y":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""", Eight, null, ["tensor 'y'", "overlap tensor 'x'"] },
        { "hole", """{"x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""", Eight, null, ["tensor 'x'", "leave a hole"] },
        { "trailing", """{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""", Eight, null, ["trailing bytes"] },
        { "negshape", """{"x":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}""", Eight, null, ["tensor 'x'", "shape entry 0"] },
        { "overflow", """{"x":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}""", Eight, null, ["tensor 'x'", "shape entry 0"] },
        { "huge", """{"x":{"dtype":"F32","shape":[2147483647,2147483647,2147483647],"data_offsets":[0,8]}}""", Eight, null, ["tensor 'x'", "overflows"] },
        { "duplicate", """{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""", Eight, null, ["tensor 'x'", "appears twice"] },
        { "nodtype", """{"x":{"shape":[2],"data_offsets":[0,8]}}""", Eight, null, ["tensor 'x'", "no dtype"] },
        { "badmeta", """{"__metadata__":{"n":1},"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", Eight, null, ["__metadata__", "'n'"] },
        { "headerpastend", """{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", Eight, 1000, ["header length 1000 runs past the end"] },
        { "headerhuge", """{}""", [], 1L << 40, ["exceeds the limit"] },
    };

    [Theory]
    [MemberData(nameof(Corruptions))]
    public void CorruptFilesThrowModelFormatExceptionNamingFileTensorAndReason(string name, string header, byte[] data, long? declared, string[] parts)
    {
        var p = Write(name + ".safetensors", header, data, declared);
        var e = Assert.Throws<ModelFormatException>(() => SafeTensors.Load(p));
        Assert.Contains(name + ".safetensors", e.Message);
        foreach (var part in parts) Assert.Contains(part, e.Message);
    }

    [Fact]
    public void TruncatedFilesThrowModelFormatException()
    {
        var p = TempPath("full.safetensors");
        SafeTensors.Save(p, new Dictionary<string, Tensor> { ["x"] = Tensor.Ones(4, 4), ["y"] = Tensor.Ones(3) });
        var bytes = File.ReadAllBytes(p);
        // every truncation point, from an empty file to one byte short
        for (int len = 0; len < bytes.Length; len++)
        {
            var q = TempPath("trunc.safetensors");
            File.WriteAllBytes(q, bytes[..len]);
            var e = Assert.Throws<ModelFormatException>(() => SafeTensors.Load(q));
            Assert.Contains("trunc.safetensors", e.Message);
        }
    }

    [Fact]
    public void RandomByteFlipsNeverThrowAnythingButModelFormatException()
    {
        var p = TempPath("fuzz.safetensors");
        SafeTensors.Save(p, new Dictionary<string, Tensor> { ["x"] = Tensor.Ones(2, 3), ["y"] = Tensor.Ones([4], DType.Int64) },
            new Dictionary<string, string> { ["format"] = "pt" });
        var good = File.ReadAllBytes(p);
        var rng = new Random(1234);
        var q = TempPath("flip.safetensors");
        for (int trial = 0; trial < 300; trial++)
        {
            var b = (byte[])good.Clone();
            int at = rng.Next(0, Math.Min(b.Length, 8 + 160));
            b[at] = (byte)rng.Next(256);
            File.WriteAllBytes(q, b);
            try
            {
                SafeTensors.Load(q);
            }
            catch (ModelFormatException)
            {
            }
        }
    }

    [Fact]
    public void InvalidUtf8HeaderIsRejected()
    {
        byte[] header = [(byte)'{', (byte)'"', 0xC3, 0x28, (byte)'"', (byte)':', (byte)'1', (byte)'}'];
        var bytes = new byte[8 + header.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)header.Length);
        header.CopyTo(bytes, 8);
        var p = TempPath("utf8.safetensors");
        File.WriteAllBytes(p, bytes);
        var e = Assert.Throws<ModelFormatException>(() => SafeTensors.Load(p));
        Assert.Contains("utf8.safetensors", e.Message);
        Assert.Contains("header is not valid", e.Message);
    }

    [Fact]
    public void MissingFileIsAModelFormatException()
    {
        var e = Assert.Throws<ModelFormatException>(() => SafeTensors.Load(TempPath("nope.safetensors")));
        Assert.Contains("nope.safetensors", e.Message);
    }

    [Fact]
    public void BoolBytesAreNormalized()
    {
        var p = Write("b.safetensors", """{"x":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]}}     """, [0, 2, 1]);
        var t = SafeTensors.Load(p)["x"];
        Assert.Equal(new[] { false, true, true }, t.ToArray<bool>());
        Assert.Equal(new byte[] { 0, 1, 1 }, t.ToBytes());
    }
}
