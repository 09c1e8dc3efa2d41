using Google.Protobuf;
using Nabla.Interop.Onnx;
using Xunit;

namespace Nabla.Onnx.Tests;

/// <summary>
/// Loading a model file with its large initializer data read from the file straight into the tensors
/// (<see cref="OnnxPayloads"/>) against parsing the whole file: the same graph, the same initializers bit for bit, on
/// real files (ResNet-18 from CNTK, whose weights are packed float_data; the model zoo's mnist-8) and on a hand-written
/// file with every kind of data field; and files it does not handle go the whole-file way.
/// </summary>
public sealed class LeanLoadTests : IDisposable
{
    readonly List<string> dirs = [];

    public void Dispose()
    {
        foreach (var d in dirs) try { Directory.Delete(d, recursive: true); } catch (IOException) { }
    }

    static void AssertSameModel(OnnxModel expected, OnnxModel actual)
    {
        Assert.Equal(expected.Graph.Nodes.Select(n => n.OpType), actual.Graph.Nodes.Select(n => n.OpType));
        Assert.Equal(expected.Graph.Initializers.Keys.Order(), actual.Graph.Initializers.Keys.Order());
        foreach (var (name, t) in expected.Graph.Initializers)
        {
            var u = actual.Graph.Initializers[name];
            Assert.Equal(t.DType, u.DType);
            Assert.Equal(t.Shape, u.Shape);
            Assert.True(t.ToBytes().AsSpan().SequenceEqual(u.ToBytes()), $"initializer '{name}' differs");
        }
    }

    static int Detached(string path)
    {
        using var file = File.OpenRead(path);
        var split = OnnxPayloads.Split(file);
        int n = 0;
        for (int i = 0; split is not null && i < 100_000; i++) if (split[i] is not null) n++;
        return n;
    }

    static OnnxModel Whole(string path) => OnnxModel.Load(File.ReadAllBytes(path), Path.GetDirectoryName(path), path, fuse: false);

    public static TheoryData<string> RealFiles()
    {
        var d = new TheoryData<string> { "resnet18" };
        if (ConformanceRunner.DataRoot is not null) d.Add("mnist-8");
        return d;
    }

    [Theory]
    [MemberData(nameof(RealFiles))]
    public void RealFilesLoadTheSameAsAWholeFileParse(string which)
    {
        string path = which == "resnet18" ? RealModelTests.ResNet18Path
            : Path.Combine(ConformanceRunner.DataRoot!, "models", "mnist-8", "model.onnx");
        Assert.True(File.Exists(path), path);
        Assert.True(Detached(path) > 0, "nothing was left in the file, so this test would compare the whole-file path with itself");
        AssertSameModel(Whole(path), OnnxModel.Load(path, fuse: false));
    }

    // A hand-written model message: protobuf's wire format written field by field, so that the data fields take the
    // forms other writers use (packed float_data and double_data, which this project's own proto2 code would not write).
    static byte[] Msg(Action<CodedOutputStream> write)
    {
        var ms = new MemoryStream();
        var o = new CodedOutputStream(ms);
        write(o);
        o.Flush();
        return ms.ToArray();
    }

    static void Bytes(CodedOutputStream o, int field, byte[] b) { o.WriteTag(field, WireFormat.WireType.LengthDelimited); o.WriteBytes(ByteString.CopyFrom(b)); }
    static void Str(CodedOutputStream o, int field, string s) { o.WriteTag(field, WireFormat.WireType.LengthDelimited); o.WriteString(s); }
    static void Int(CodedOutputStream o, int field, long v) { o.WriteTag(field, WireFormat.WireType.Varint); o.WriteInt64(v); }

    /// <summary>TensorProto: dims, data_type, name, then the data field (number, bytes).</summary>
    static byte[] TensorMsg(string name, int dataType, long[] dims, int dataField, byte[] data) => Msg(t =>
    {
        foreach (var d in dims) Int(t, 1, d);
        Int(t, 2, dataType);
        Str(t, 8, name);
        Bytes(t, dataField, data);
    });

    static byte[] Floats(int n, int seed) => [.. Enumerable.Range(0, n).SelectMany(i => BitConverter.GetBytes((float)Math.Sin(seed + i * 0.37)))];

    static byte[] Model(IEnumerable<byte[]> initializers, bool graphTwice = false) => Msg(m =>
    {
        Int(m, 1, 8);   // ir_version
        var graph = Msg(g =>
        {
            Bytes(g, 1, Msg(n => { Str(n, 1, "x"); Str(n, 2, "y"); Str(n, 3, "id"); Str(n, 4, "Identity"); }));
            Str(g, 2, "g");
            foreach (var t in initializers) Bytes(g, 5, t);
            Bytes(g, 11, Msg(v => Str(v, 1, "x")));
            Bytes(g, 12, Msg(v => Str(v, 1, "y")));
        });
        Bytes(m, 7, graph);
        if (graphTwice) Bytes(m, 7, graph);
        Bytes(m, 8, Msg(op => { Str(op, 1, ""); Int(op, 2, 13); }));
        Str(m, 2, "hand-written");   // a field after the graph: the stripped message keeps what follows it
    });

    string Write(byte[] bytes)
    {
        var dir = Path.Combine(Path.GetTempPath(), "nabla-lean-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        dirs.Add(dir);
        var path = Path.Combine(dir, "model.onnx");
        File.WriteAllBytes(path, bytes);
        return path;
    }

    static IEnumerable<byte[]> EveryKind() =>
    [
        TensorMsg("packed_floats", 1, [32, 40], 4, Floats(1280, 1)),                   // float_data, packed
        TensorMsg("raw_floats", 1, [2, 1024], 9, Floats(2048, 2)),                      // raw_data
        TensorMsg("packed_doubles", 11, [1024], 10, [.. Enumerable.Range(0, 1024).SelectMany(i => BitConverter.GetBytes(i * 0.001 - 0.3))]),
        TensorMsg("raw_longs", 7, [1024], 9, [.. Enumerable.Range(0, 1024).SelectMany(i => BitConverter.GetBytes((long)i * 1_000_003 - 7))]),
        TensorMsg("raw_halves", 10, [4096], 9, [.. Enumerable.Range(0, 4096).SelectMany(i => BitConverter.GetBytes((Half)(i * 0.01)))]),
        TensorMsg("raw_bools", 9, [5000], 9, [.. Enumerable.Range(0, 5000).Select(i => (byte)(i % 3 == 0 ? 1 : 0))]),
        TensorMsg("small_raw", 1, [4], 9, Floats(4, 3)),                                 // under the threshold: stays inline
        TensorMsg("raw_4095", 2, [4095], 9, [.. Enumerable.Range(0, 4095).Select(i => (byte)(i * 7))]),   // one byte under it
        TensorMsg("raw_4096", 2, [4096], 9, [.. Enumerable.Range(0, 4096).Select(i => (byte)(i * 5))]),   // at it: detached
        TensorMsg("packed_floats_of_an_int64", 7, [1024], 4, Floats(1024, 4)),          // float_data on INT64: left to the parser
    ];

    [Fact]
    public void EveryKindOfDataFieldLoadsTheSameAsAWholeFileParse()
    {
        var path = Write(Model(EveryKind().Where(t => !t.SequenceEqual(EveryKind().Last()))));
        Assert.Equal(7, Detached(path));
        var lean = OnnxModel.Load(path, fuse: false);
        AssertSameModel(Whole(path), lean);
        Assert.Equal(Floats(1280, 1), lean.Graph.Initializers["packed_floats"].ToBytes());
    }

    /// <summary>Tensors whose data protobuf would assemble from several fields, which the walker leaves to the parser.</summary>
    static IEnumerable<byte[]> Unsplittable()
    {
        // data_type given twice: the last one (INT64) wins, so the float_data before it is no FLOAT data.
        yield return Model([Msg(t => { Int(t, 1, 1024); Int(t, 2, 1); Str(t, 8, "retyped"); Bytes(t, 4, Floats(1024, 6)); Int(t, 2, 7); })]);
        // Packed and unpacked float_data in one tensor: protobuf joins them into 1024 + 2 values.
        yield return Model([Msg(t =>
        {
            Int(t, 1, 1026); Int(t, 2, 1); Str(t, 8, "mixed");
            Bytes(t, 4, Floats(1024, 7));
            t.WriteTag(4, WireFormat.WireType.Fixed32); t.WriteFloat(1.5f);
            t.WriteTag(4, WireFormat.WireType.Fixed32); t.WriteFloat(-2.5f);
        })]);
        // An initializer under a tag written as a 6-byte varint (42 plus bit 35), which protobuf reads as field 5: the
        // walker must not take it for an unknown field and number the initializers after it wrongly.
        yield return Msg(m =>
        {
            Int(m, 1, 8);
            Bytes(m, 7, Msg(g =>
            {
                Bytes(g, 1, Msg(n => { Str(n, 1, "x"); Str(n, 2, "y"); Str(n, 3, "id"); Str(n, 4, "Identity"); }));
                g.WriteRawTag(0xAA, 0x80, 0x80, 0x80, 0x80); g.WriteRawTag(0x01);
                g.WriteBytes(ByteString.CopyFrom(TensorMsg("hidden", 1, [2048], 9, Floats(2048, 8))));
                Bytes(g, 5, TensorMsg("plain", 1, [2048], 9, Floats(2048, 9)));
                Bytes(g, 11, Msg(v => Str(v, 1, "x")));
                Bytes(g, 12, Msg(v => Str(v, 1, "y")));
            }));
            Bytes(m, 8, Msg(op => { Str(op, 1, ""); Int(op, 2, 13); }));
        });
    }

    [Fact]
    public void FilesItDoesNotSplitLoadAsBefore()
    {
        // A graph field twice (protobuf merges the two), a float_data that does not match the tensor's type, and the
        // tensors above.
        foreach (var bytes in new[] { Model(EveryKind().Take(2), graphTwice: true), Model([EveryKind().Last()]) }.Concat(Unsplittable()))
        {
            var path = Write(bytes);
            Assert.Equal(0, Detached(path));
            var whole = Record.Exception(() => Whole(path));
            var lean = Record.Exception(() => OnnxModel.Load(path, fuse: false));
            Assert.Equal(whole?.GetType(), lean?.GetType());
            Assert.Equal(whole?.Message, lean?.Message);
        }
    }

    [Fact]
    public void ATruncatedOrWrongSizedFileIsAModelFormatError()
    {
        var full = Model(EveryKind().Take(3));
        // Cut inside the graph: neither way can read it.
        var cut = Write(full[..(full.Length / 2)]);
        Assert.Throws<ModelFormatException>(() => OnnxModel.Load(cut));
        // A detached float_data with fewer values than the shape needs names the field, as the whole-file parse does.
        var wrong = Write(Model([TensorMsg("w", 1, [2000], 4, Floats(1500, 5))]));
        Assert.Equal(1, Detached(wrong));
        var e = Assert.Throws<ModelFormatException>(() => OnnxModel.Load(wrong));
        Assert.Contains("float_data has 1500 values", e.Message);
        Assert.Equal(Assert.Throws<ModelFormatException>(() => Whole(wrong)).Message, e.Message);
        // raw_data beside data_location EXTERNAL: the external data comes first, as in the whole-file parse.
        var external = Write(Model([Msg(t => { Int(t, 1, 2048); Int(t, 2, 1); Str(t, 8, "ext"); Bytes(t, 9, Floats(2048, 10)); Int(t, 14, 1); })]));
        Assert.Equal(1, Detached(external));
        Assert.Equal(Assert.Throws<ModelFormatException>(() => Whole(external)).Message,
            Assert.Throws<ModelFormatException>(() => OnnxModel.Load(external, fuse: false)).Message);
    }
}
