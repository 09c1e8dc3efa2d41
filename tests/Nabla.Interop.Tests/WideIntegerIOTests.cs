using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;
using Nabla.IO;
using Nabla.Interop.Onnx;
using Xunit;

namespace Nabla.Interop.Tests;

/// <summary>
/// int16, uint16, uint32 and uint64 through every file format: safetensors (I16/U16/U32/U64, bit-identical round trip
/// and a file from an independent writer), .npy (&lt;i2 &lt;u2 &lt;u4 &lt;u8, big-endian and Fortran order, files written by
/// NumPy), PyTorch checkpoints (int16 as ShortStorage both ways, torch 1.13's own files; uint16/32/64 refused on write,
/// read from a _rebuild_tensor_v3 pickle over an untyped storage) and ONNX TensorProtos (raw_data and typed fields).
/// Fixtures: tools/fixtures/make_wide_int_fixtures.py.
/// </summary>
public sealed class WideIntegerIOTests : IDisposable
{
    readonly Fixtures.TempDir tmp = new();

    public void Dispose() => tmp.Dispose();

    // The values of tools/fixtures/make_wide_int_fixtures.py.
    static readonly short[] I2 = [-32768, -1, 0, 1, 12345, 32767];
    static readonly ushort[] U2 = [0, 1, 255, 256, 32768, 65535];
    static readonly uint[] U4 = [0, 1, 65536, 1u << 31, uint.MaxValue - 1, uint.MaxValue];
    static readonly ulong[] U8 = [0, 1, (1UL << 53) + 1, 1UL << 63, ulong.MaxValue - 1, ulong.MaxValue];

    static string Npy_(string name) => Path.Combine(AppContext.BaseDirectory, "fixtures", "npy", name);

    static Dictionary<string, Tensor> Sample() => new()
    {
        ["i16"] = Tensor.FromArray(I2, 2, 3),
        ["u16"] = Tensor.FromArray(U2, 3, 2),
        ["u32"] = Tensor.FromArray(U4),
        ["u64"] = Tensor.FromArray(U8, 2, 3),
        ["u64_view"] = Tensor.FromArray(U8, 2, 3).Transpose(0, 1),   // written from a strided view
    };

    [Fact]
    public void SafeTensorsRoundTripIsBitIdentical()
    {
        var path = tmp.File("w.safetensors");
        var src = Sample();
        SafeTensors.Save(path, src);
        var header = SafeTensors.ReadHeader(path).Tensors.ToDictionary(t => t.Name);
        Assert.Equal("I16", header["i16"].DTypeName);
        Assert.Equal("U16", header["u16"].DTypeName);
        Assert.Equal("U32", header["u32"].DTypeName);
        Assert.Equal("U64", header["u64"].DTypeName);
        Assert.Equal(DType.UInt64, header["u64"].DType);
        var back = SafeTensors.Load(path);
        Assert.Equal(I2, back["i16"].ToArray<short>());
        Assert.Equal(U2, back["u16"].ToArray<ushort>());
        Assert.Equal(U4, back["u32"].ToArray<uint>());
        Assert.Equal(U8, back["u64"].ToArray<ulong>());
        Assert.Equal([3, 2], back["u64_view"].Shape);
        Assert.Equal(src["u64_view"].Contiguous().ToArray<ulong>(), back["u64_view"].ToArray<ulong>());
        // Saving what was loaded gives the same file, byte for byte.
        var again = tmp.File("again.safetensors");
        SafeTensors.Save(again, back);
        Assert.Equal(File.ReadAllBytes(path), File.ReadAllBytes(again));
        // The mapped reader gives zero-copy views and tensors of the same values.
        using var f = SafeTensorsFile.Open(path);
        Assert.Equal(U8, f.GetElements<ulong>("u64").ToArray());
        Assert.Equal(DType.UInt16, f.LoadTensor("u16").DType);
        Assert.Equal(U2, f.LoadTensor("u16").ToArray<ushort>());
    }

    [Fact]
    public void SafeTensorsFromAnIndependentWriter()
    {
        var sd = SafeTensors.Load(Npy_("wide_ints.safetensors"));
        Assert.Equal(DType.Int16, sd["i2"].DType);
        Assert.Equal(I2, sd["i2"].ToArray<short>());
        Assert.Equal(U2, sd["u2"].ToArray<ushort>());
        Assert.Equal(U4, sd["u4"].ToArray<uint>());
        Assert.Equal(U8, sd["u8"].ToArray<ulong>());
        Assert.All(sd.Values, t => Assert.Equal([2, 3], t.Shape));
    }

    [Fact]
    public void NpyFilesWrittenByNumPy()
    {
        var i2 = Npy.Load(Npy_("wide_i2_2x3.npy"));
        Assert.Equal(DType.Int16, i2.DType);
        Assert.Equal([2, 3], i2.Shape);
        Assert.Equal(I2, i2.ToArray<short>());
        Assert.Equal(U2, Npy.Load(Npy_("wide_u2_6.npy")).ToArray<ushort>());
        var u4 = Npy.Load(Npy_("wide_u4_3x2.npy"));
        Assert.Equal([3, 2], u4.Shape);
        Assert.Equal(U4, u4.ToArray<uint>());
        Assert.Equal(U8, Npy.Load(Npy_("wide_u8_6.npy")).ToArray<ulong>());
        Assert.Equal(I2, Npy.Load(Npy_("wide_i2_be_6.npy")).ToArray<short>());   // >i2
        Assert.Equal(U4, Npy.Load(Npy_("wide_u4_be_6.npy")).ToArray<uint>());    // >u4
        var fortran = Npy.Load(Npy_("wide_u2_fortran_2x3.npy"));
        Assert.Equal([2, 3], fortran.Shape);
        Assert.Equal(U2, fortran.ToArray<ushort>());
    }

    [Theory]
    [InlineData("i16", "<i2")]
    [InlineData("u16", "<u2")]
    [InlineData("u32", "<u4")]
    [InlineData("u64", "<u8")]
    public void NpyWriteMatchesNumPyAndReadsBack(string name, string descr)
    {
        var t = Sample()[name];
        var path = tmp.File(name + ".npy");
        Npy.Save(path, t);
        var bytes = File.ReadAllBytes(path);
        Assert.Contains($"'descr': '{descr}'", Encoding.Latin1.GetString(bytes, 10, 64));
        var back = Npy.Load(path);
        Assert.Equal(t.DType, back.DType);
        Assert.Equal(t.Shape, back.Shape);
        Assert.Equal(t.ToDoubleArray(), back.ToDoubleArray());
        // NumPy's own file of the same int16 array has the same bytes, header included.
        if (name == "i16") Assert.Equal(File.ReadAllBytes(Npy_("wide_i2_2x3.npy")), bytes);
    }

    [Fact]
    public void NpyUInt64IsExactAndUInt16ViewIsWrittenContiguously()
    {
        var path = tmp.File("u64.npy");
        Npy.Save(path, Tensor.FromArray(U8));
        Assert.Equal(File.ReadAllBytes(Npy_("wide_u8_6.npy")), File.ReadAllBytes(path));
        var view = Tensor.FromArray(U2, 2, 3).Transpose(0, 1);
        Npy.Save(path, view);
        Assert.Equal(view.Contiguous().ToArray<ushort>(), Npy.Load(path).ToArray<ushort>());
    }

    [Theory]
    [InlineData("int16.pt")]
    [InlineData("legacy_int16.pt")]
    public void Int16CheckpointsWrittenByTorch(string file)
    {
        var sd = PyTorchCheckpoint.LoadStateDict(Fixtures.Generated(file));
        Assert.Equal(DType.Int16, sd["i16"].DType);
        Assert.Equal([2, 3], sd["i16"].Shape);
        Assert.Equal(I2, sd["i16"].ToArray<short>());
        Assert.Equal([3, 2], sd["i16_t"].Shape);
        Assert.Equal(sd["i16"].Transpose(0, 1).Contiguous().ToArray<short>(), sd["i16_t"].Contiguous().ToArray<short>());
        Assert.Empty(sd["i16_scalar"].Shape);
        Assert.Equal(-7.0, sd["i16_scalar"].Item());
    }

    [Fact]
    public void Int16CheckpointRoundTripUsesShortStorage()
    {
        var path = tmp.File("i16.pt");
        var src = new Dictionary<string, Tensor> { ["w"] = Tensor.FromArray(I2, 3, 2), ["v"] = Tensor.FromArray(I2, 2, 3).Transpose(0, 1) };
        PyTorchCheckpoint.Save(path, src);
        using (var zip = ZipFile.OpenRead(path))
        {
            var pkl = zip.Entries.Single(e => e.FullName.EndsWith("data.pkl", StringComparison.Ordinal));
            using var s = pkl.Open();
            var ms = new MemoryStream();
            s.CopyTo(ms);
            Assert.Contains("torch\nShortStorage\n", Encoding.Latin1.GetString(ms.ToArray()));
        }
        var back = PyTorchCheckpoint.LoadStateDict(path);
        Assert.Equal(DType.Int16, back["w"].DType);
        Assert.Equal(I2, back["w"].ToArray<short>());
        Assert.Equal(src["v"].Contiguous().ToArray<short>(), back["v"].ToArray<short>());
    }

    [Theory]
    [InlineData(DType.UInt16)]
    [InlineData(DType.UInt32)]
    [InlineData(DType.UInt64)]
    public void UnsignedCheckpointsAreRefusedOnWriteByName(DType dtype)
    {
        var path = tmp.File("u.pt");
        var tensors = new Dictionary<string, Tensor> { ["ok"] = Tensor.Zeros([2]), ["counts"] = Tensor.Zeros([2], dtype) };
        var e = Assert.Throws<DTypeException>(() => PyTorchCheckpoint.Save(path, tensors));
        Assert.Contains("'counts'", e.Message);
        Assert.Contains(dtype.TorchName(), e.Message);
        Assert.False(File.Exists(path));
    }

    /// <summary>
    /// Newer torch saves dtypes that have no typed storage class (uint16/32/64 among them) on an untyped storage rebuilt by
    /// _rebuild_tensor_v3(..., dtype). torch 1.13 cannot write one, so Nabla's int16 file is patched into that form:
    /// UntypedStorage of 2·n bytes and a torch.uint16 argument.
    /// </summary>
    [Fact]
    public void UInt16FromAnUntypedStorageV3PickleLoads()
    {
        var path = tmp.File("src.pt");
        PyTorchCheckpoint.Save(path, new Dictionary<string, Tensor> { ["u"] = Tensor.FromArray(U2.Select(v => unchecked((short)v)).ToArray()) });
        var patched = tmp.File("u16.pt");
        using (var src = ZipFile.OpenRead(path))
        using (var dst = ZipFile.Open(patched, ZipArchiveMode.Create))
        {
            foreach (var e in src.Entries)
            {
                using var input = e.Open();
                var ms = new MemoryStream();
                input.CopyTo(ms);
                var bytes = ms.ToArray();
                if (e.FullName.EndsWith("data.pkl", StringComparison.Ordinal))
                {
                    bytes = Replace(bytes, "torch\nShortStorage\n", "torch\nUntypedStorage\n");
                    bytes = Replace(bytes, "cpuK\u0006t", "cpuK\u000ct");   // numel → byte count
                    bytes = Replace(bytes, "_rebuild_tensor_v2", "_rebuild_tensor_v3");
                    bytes = Replace(bytes, "OrderedDict\n)RtR", "OrderedDict\n)Rctorch\nuint16\ntR");
                }
                using var output = dst.CreateEntry(e.FullName, CompressionLevel.NoCompression).Open();
                output.Write(bytes);
            }
        }
        var sd = PyTorchCheckpoint.LoadStateDict(patched);
        Assert.Equal(DType.UInt16, sd["u"].DType);
        Assert.Equal(U2, sd["u"].ToArray<ushort>());

        static byte[] Replace(byte[] b, string from, string to)
        {
            var pattern = Encoding.Latin1.GetBytes(from);
            int at = b.AsSpan().IndexOf(pattern);
            Assert.True(at >= 0, $"pattern {from.Replace("\n", "\\n")} not found");
            Assert.True(b.AsSpan(at + 1).IndexOf(pattern) < 0, $"pattern {from} is not unique");
            return [.. b[..at], .. Encoding.Latin1.GetBytes(to), .. b[(at + pattern.Length)..]];
        }
    }

    [Fact]
    public void OnnxTensorProtosRoundTrip()
    {
        foreach (var (name, t) in Sample())
        {
            var proto = Onnx.Export.OnnxGraphBuilder.ToProto(name, t);
            Assert.Equal(t.DType switch { DType.Int16 => 5, DType.UInt16 => 4, DType.UInt32 => 12, _ => 13 }, proto.DataType);
            var back = OnnxTensors.ToTensor(proto, null, "test");
            Assert.Equal(t.DType, back.DType);
            Assert.Equal(t.Shape, back.Shape);
            Assert.Equal(t.ToBytes(), back.ToBytes());
        }
    }

    [Fact]
    public void OnnxTypedFieldsOfTheNewTypes()
    {
        // INT16 and UINT16 sit one per int32_data entry (UINT16 as its value, INT16 sign-extended); UINT32 and UINT64
        // in uint64_data.
        var i16 = new Onnx.Proto.TensorProto { DataType = 5, Dims = { 3 }, Int32Data = { -32768, -1, 32767 } };
        Assert.Equal(new short[] { -32768, -1, 32767 }, OnnxTensors.ToTensor(i16, null, "t").ToArray<short>());
        var u16 = new Onnx.Proto.TensorProto { DataType = 4, Dims = { 2 }, Int32Data = { 65535, 7 } };
        Assert.Equal(new ushort[] { 65535, 7 }, OnnxTensors.ToTensor(u16, null, "t").ToArray<ushort>());
        var u32 = new Onnx.Proto.TensorProto { DataType = 12, Dims = { 2 }, Uint64Data = { uint.MaxValue, 3 } };
        Assert.Equal(new uint[] { uint.MaxValue, 3 }, OnnxTensors.ToTensor(u32, null, "t").ToArray<uint>());
        var u64 = new Onnx.Proto.TensorProto { DataType = 13, Dims = { 2 }, Uint64Data = { ulong.MaxValue, (1UL << 53) + 1 } };
        Assert.Equal(new[] { ulong.MaxValue, (1UL << 53) + 1 }, OnnxTensors.ToTensor(u64, null, "t").ToArray<ulong>());
        var bad = new Onnx.Proto.TensorProto { Name = "w", DataType = 13, Dims = { 3 }, Uint64Data = { 1 } };
        var e = Assert.Throws<ModelFormatException>(() => OnnxTensors.ToTensor(bad, null, "m.onnx"));
        Assert.Contains("tensor 'w'", e.Message);
        Assert.Contains("uint64_data", e.Message);
    }
}
