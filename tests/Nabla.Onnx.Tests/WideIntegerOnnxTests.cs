using Google.Protobuf;
using Nabla.Interop.Onnx;
using Nabla.Interop.Onnx.Proto;
using Xunit;

namespace Nabla.Onnx.Tests;

/// <summary>
/// Single-node ONNX graphs over INT16/UINT16/UINT32/UINT64 with values the conformance cases do not reach: uint64
/// above 2^53 (where a detour through double would round), wrapping casts, exact integer Div/Mod, BitShift and BitCast.
/// </summary>
public sealed class WideIntegerOnnxTests
{
    static byte[] OneNode(string op, int[] inputTypes, int outputType, Action<NodeProto>? edit = null, int opset = 13)
    {
        var g = new GraphProto { Name = "g" };
        var n = new NodeProto { OpType = op, Name = "n" };
        for (int i = 0; i < inputTypes.Length; i++)
        {
            g.Input.Add(new ValueInfoProto { Name = "x" + i, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = inputTypes[i] } } });
            n.Input.Add("x" + i);
        }
        n.Output.Add("y");
        edit?.Invoke(n);
        g.Node.Add(n);
        g.Output.Add(new ValueInfoProto { Name = "y", Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = outputType } } });
        var m = new ModelProto { IrVersion = 8, Graph = g };
        m.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = opset });
        return m.ToByteArray();
    }

    static AttributeProto Int(string name, long v) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = v };

    static AttributeProto Str(string name, string v) => new() { Name = name, Type = AttributeProto.Types.AttributeType.String, S = ByteString.CopyFromUtf8(v) };

    [Fact]
    public void UInt64DivAndAddAreExactAboveTwoToThe53()
    {
        ulong big = ulong.MaxValue, odd = (1UL << 63) + 3;
        var div = OnnxModel.Load(OneNode("Div", [13, 13], 13));
        var y = div.Run(Tensor.FromArray(new[] { big, odd, 7UL }), Tensor.FromArray(new[] { 2UL, 1UL, 0UL }))[0];
        Assert.Equal(DType.UInt64, y.DType);
        Assert.Equal(new[] { big / 2, odd, 0UL }, y.ToArray<ulong>());   // x / 0 gives 0
        var add = OnnxModel.Load(OneNode("Add", [13, 13], 13));
        Assert.Equal(new[] { 0UL, odd + 1 }, add.Run(Tensor.FromArray(new[] { big, odd }), Tensor.FromArray(new[] { 1UL, 1UL }))[0].ToArray<ulong>());
        var and = OnnxModel.Load(OneNode("BitwiseAnd", [13, 13], 13, opset: 18));
        Assert.Equal(new[] { odd }, and.Run(Tensor.FromArray(new[] { big }), Tensor.FromArray(new[] { odd }))[0].ToArray<ulong>());
    }

    [Fact]
    public void Int16DivAndModFollowCAndPython()
    {
        var a = Tensor.FromArray(new short[] { -7, 7, -32768, 5 });
        var b = Tensor.FromArray(new short[] { 3, -3, -1, 0 });
        var div = OnnxModel.Load(OneNode("Div", [5, 5], 5));
        // Truncation toward zero; -32768 / -1 wraps to -32768 as the int16 result, as C's narrowing does.
        Assert.Equal(new short[] { -7 / 3, 7 / -3, -32768, 0 }, div.Run(a, b)[0].ToArray<short>());
        var mod = OnnxModel.Load(OneNode("Mod", [5, 5], 5));
        Assert.Equal(new short[] { 2, -2, 0, 0 }, mod.Run(a, b)[0].ToArray<short>());           // the divisor's sign
        var fmod = OnnxModel.Load(OneNode("Mod", [5, 5], 5, n => n.Attribute.Add(Int("fmod", 1))));
        Assert.Equal(new short[] { -7 % 3, 7 % -3, 0, 0 }, fmod.Run(a, b)[0].ToArray<short>()); // the dividend's sign
    }

    [Fact]
    public void CastsBetweenTheNewTypesWrap()
    {
        var toU16 = OnnxModel.Load(OneNode("Cast", [5], 4, n => n.Attribute.Add(Int("to", 4))));
        Assert.Equal(new ushort[] { 65535, 32768, 7 }, toU16.Run(Tensor.FromArray(new short[] { -1, -32768, 7 }))[0].ToArray<ushort>());
        var toF = OnnxModel.Load(OneNode("Cast", [13], 11, n => n.Attribute.Add(Int("to", 11))));
        Assert.Equal(new[] { 18446744073709551615.0 }, toF.Run(Tensor.FromArray(new[] { ulong.MaxValue }))[0].ToArray<double>());
        var toU32 = OnnxModel.Load(OneNode("Cast", [7], 12, n => n.Attribute.Add(Int("to", 12))));
        Assert.Equal(new uint[] { uint.MaxValue, 1 }, toU32.Run(Tensor.FromArray(new[] { -1L, 1L << 32 | 1 }))[0].ToArray<uint>());
    }

    [Fact]
    public void BitShiftOnEveryUnsignedWidth()
    {
        var left = OnnxModel.Load(OneNode("BitShift", [13, 13], 13, n => n.Attribute.Add(Str("direction", "LEFT")), opset: 11));
        Assert.Equal(new[] { 1UL << 63, 0UL, 2UL }, left.Run(Tensor.FromArray(new[] { 1UL, 1UL, 1UL }), Tensor.FromArray(new ulong[] { 63, 64, 1 }))[0].ToArray<ulong>());
        var right = OnnxModel.Load(OneNode("BitShift", [13, 13], 13, n => n.Attribute.Add(Str("direction", "RIGHT")), opset: 11));
        Assert.Equal(new[] { 1UL, ulong.MaxValue >> 4 }, right.Run(Tensor.FromArray(new[] { 1UL << 63, ulong.MaxValue }), Tensor.FromArray(new ulong[] { 63, 4 }))[0].ToArray<ulong>());
        var left16 = OnnxModel.Load(OneNode("BitShift", [4, 4], 4, n => n.Attribute.Add(Str("direction", "LEFT")), opset: 11));
        Assert.Equal(new ushort[] { 0x8000, 0xFFF0 }, left16.Run(Tensor.FromArray(new ushort[] { 0x8001, 0xFFFF }), Tensor.FromArray(new ushort[] { 15, 4 }))[0].ToArray<ushort>());
        // Signed inputs are not in BitShift's type list.
        var signed = OnnxModel.Load(OneNode("BitShift", [5, 5], 5, n => n.Attribute.Add(Str("direction", "LEFT")), opset: 11));
        var e = Assert.Throws<ModelFormatException>(() => signed.Run(Tensor.FromArray(new short[] { 1 }), Tensor.FromArray(new short[] { 1 })));
        Assert.Contains("Int16", e.Message);
    }

    [Fact]
    public void BitCastReinterpretsBytesOfTheSameWidth()
    {
        var m = OnnxModel.Load(OneNode("BitCast", [12], 6, n => n.Attribute.Add(Int("to", 6)), opset: 26));
        Assert.Equal(new[] { -1, int.MinValue, 5 }, m.Run(Tensor.FromArray(new[] { uint.MaxValue, 1u << 31, 5u }))[0].ToArray<int>());
        var h = OnnxModel.Load(OneNode("BitCast", [5], 10, n => n.Attribute.Add(Int("to", 10)), opset: 26));
        Assert.Equal(new[] { BitConverter.UInt16BitsToHalf(0x3C00) }, h.Run(Tensor.FromArray(new short[] { 0x3C00 }))[0].ToArray<Half>());
        var wrong = OnnxModel.Load(OneNode("BitCast", [4], 6, n => n.Attribute.Add(Int("to", 6)), opset: 26));
        var e = Assert.Throws<ModelFormatException>(() => wrong.Run(Tensor.FromArray(new ushort[] { 1 })));
        Assert.Contains("widths differ", e.Message);
    }
}
