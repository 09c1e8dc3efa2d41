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
        TensorMsg("packed_floats_of_an_int64", 7, [1024], 4, Floats(1024, 4)),          // float_data on INT64: left to the parser
    ];

    [Fact]
    public void EveryKindOfDataFieldLoadsTheSameAsAWholeFileParse()
    {
        var path = Write(Model(EveryKind().Where(t => !t.SequenceEqual(EveryKind().Last()))));
        Assert.Equal(6, Detached(path));
        var lean = OnnxModel.Load(path, fuse: false);
        AssertSameModel(Whole(path), lean);
        Assert.Equal(Floats(1280, 1), lean.Graph.Initializers["packed_floats"].ToBytes());
    }

    [Fact]
    public void FilesItDoesNotSplitLoadAsBefore()
    {
        // A graph field twice (protobuf merges the two), and a float_data that does not match the tensor's type.
        foreach (var bytes in new[] { Model(EveryKind().Take(2), graphTwice: true), Model([EveryKind().Last()]) })
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
    }
}
