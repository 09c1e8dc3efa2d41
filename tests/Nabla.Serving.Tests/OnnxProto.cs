using Google.Protobuf;

namespace Nabla.Serving.Tests;

/// <summary>Writes ONNX protobuf messages field by field (onnx.proto numbers), for the small models the tests build by hand.</summary>
static class OnnxProto
{
    public static byte[] Msg(Action<CodedOutputStream> write)
    {
        using var ms = new MemoryStream();
        var o = new CodedOutputStream(ms);
        write(o);
        o.Flush();
        return ms.ToArray();
    }

    public static void Bytes(CodedOutputStream o, int field, byte[] b) { o.WriteTag(field, WireFormat.WireType.LengthDelimited); o.WriteBytes(ByteString.CopyFrom(b)); }
    public static void Str(CodedOutputStream o, int field, string s) { o.WriteTag(field, WireFormat.WireType.LengthDelimited); o.WriteString(s); }
    public static void Int(CodedOutputStream o, int field, long v) { o.WriteTag(field, WireFormat.WireType.Varint); o.WriteInt64(v); }

    /// <summary>A ValueInfoProto of element type <paramref name="elemType"/> and shape [batch, 3].</summary>
    public static byte[] BatchBy3(string name, int elemType) => Msg(o =>
    {
        Str(o, 1, name);
        var dimBatch = Msg(d => Str(d, 2, "batch"));
        var dim3 = Msg(d => Int(d, 1, 3));
        var shape = Msg(s => { Bytes(s, 1, dimBatch); Bytes(s, 1, dim3); });
        var tensor = Msg(t => { Int(t, 1, elemType); Bytes(t, 2, shape); });
        Bytes(o, 2, Msg(t => Bytes(t, 1, tensor)));
    });
}
