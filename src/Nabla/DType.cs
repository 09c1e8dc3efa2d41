namespace Nabla;

/// <summary>Element types. Float32 is first-class; Float64 is used for gradient checks; the 16-bit floats are
/// storage formats that compute in float32 (as PyTorch does on CPU).</summary>
public enum DType
{
    Bool,
    UInt8,
    Int8,
    Int32,
    Int64,
    Float16,
    BFloat16,
    Float32,
    Float64,
}

public static class DTypes
{
    public static int ElementSize(this DType t) => t switch
    {
        DType.Bool or DType.UInt8 or DType.Int8 => 1,
        DType.Float16 or DType.BFloat16 => 2,
        DType.Int32 or DType.Float32 => 4,
        _ => 8,
    };

    public static bool IsFloatingPoint(this DType t) => t is DType.Float16 or DType.BFloat16 or DType.Float32 or DType.Float64;

    public static bool IsIntegral(this DType t) => t is DType.UInt8 or DType.Int8 or DType.Int32 or DType.Int64;

    /// <summary>PyTorch's name for the dtype, as printed by <c>torch.float32</c>.</summary>
    public static string TorchName(this DType t) => t switch
    {
        DType.Bool => "torch.bool",
        DType.UInt8 => "torch.uint8",
        DType.Int8 => "torch.int8",
        DType.Int32 => "torch.int32",
        DType.Int64 => "torch.int64",
        DType.Float16 => "torch.float16",
        DType.BFloat16 => "torch.bfloat16",
        DType.Float32 => "torch.float32",
        _ => "torch.float64",
    };

    // Category: 0 bool, 1 integer, 2 floating.
    static int Category(DType t) => t == DType.Bool ? 0 : t.IsFloatingPoint() ? 2 : 1;

    /// <summary>
    /// PyTorch's promotion for two tensors of equal standing: the higher category wins (bool &lt; int &lt; float);
    /// within a category the wider type wins; uint8 with int8 gives int16 in PyTorch, which Nabla lacks, so int32.
    /// Float16 with BFloat16 gives Float32, as in PyTorch.
    /// </summary>
    public static DType Promote(DType a, DType b)
    {
        if (a == b) return a;
        int ca = Category(a), cb = Category(b);
        if (ca != cb) return ca > cb ? a : b;
        if (ca == 2)
        {
            if ((a == DType.Float16 && b == DType.BFloat16) || (a == DType.BFloat16 && b == DType.Float16)) return DType.Float32;
            return (DType)Math.Max((int)a, (int)b);
        }
        if ((a == DType.UInt8 && b == DType.Int8) || (a == DType.Int8 && b == DType.UInt8)) return DType.Int32;
        return (DType)Math.Max((int)a, (int)b);
    }

    /// <summary>
    /// Promotion of a tensor with a dimensionless operand (a C# scalar or a 0-d tensor): the scalar only
    /// raises the category (int tensor + 2.5 gives the default float dtype), never the width.
    /// </summary>
    public static DType PromoteWithScalar(DType tensor, DType scalarKind)
    {
        int ct = Category(tensor), cs = Category(scalarKind);
        if (cs <= ct) return tensor;
        return cs == 2 ? DType.Float32 : DType.Int64;
    }

    public static Type ClrType(this DType t) => t switch
    {
        DType.Bool => typeof(bool),
        DType.UInt8 => typeof(byte),
        DType.Int8 => typeof(sbyte),
        DType.Int32 => typeof(int),
        DType.Int64 => typeof(long),
        DType.Float16 => typeof(Half),
        DType.BFloat16 => typeof(BFloat16),
        DType.Float32 => typeof(float),
        _ => typeof(double),
    };

    public static DType Of<T>()
    {
        if (typeof(T) == typeof(float)) return DType.Float32;
        if (typeof(T) == typeof(double)) return DType.Float64;
        if (typeof(T) == typeof(long)) return DType.Int64;
        if (typeof(T) == typeof(int)) return DType.Int32;
        if (typeof(T) == typeof(sbyte)) return DType.Int8;
        if (typeof(T) == typeof(byte)) return DType.UInt8;
        if (typeof(T) == typeof(bool)) return DType.Bool;
        if (typeof(T) == typeof(Half)) return DType.Float16;
        if (typeof(T) == typeof(BFloat16)) return DType.BFloat16;
        throw new DTypeException($"{typeof(T).Name} is not a Nabla element type");
    }
}

/// <summary>bfloat16: the upper 16 bits of an IEEE float32. Conversion rounds to nearest even, as PyTorch does.</summary>
public readonly struct BFloat16 : IEquatable<BFloat16>
{
    public readonly ushort Bits;

    BFloat16(ushort bits) => Bits = bits;

    public static BFloat16 FromBits(ushort bits) => new(bits);

    public static explicit operator BFloat16(float f)
    {
        uint u = BitConverter.SingleToUInt32Bits(f);
        if (float.IsNaN(f)) return new BFloat16((ushort)((u >> 16) | 0x40));
        uint rounding = 0x7FFF + ((u >> 16) & 1);
        return new BFloat16((ushort)((u + rounding) >> 16));
    }

    public static explicit operator float(BFloat16 b) => BitConverter.UInt32BitsToSingle((uint)b.Bits << 16);

    public bool Equals(BFloat16 other) => Bits == other.Bits;
    public override bool Equals(object? obj) => obj is BFloat16 b && Equals(b);
    public override int GetHashCode() => Bits;
    public override string ToString() => ((float)this).ToString(System.Globalization.CultureInfo.InvariantCulture);
}
