namespace Nabla;

/// <summary>Element types. Float32 is first-class; Float64 is used for gradient checks; the 16-bit floats are
/// storage formats that compute in float32 (as PyTorch does on CPU). Int16, UInt16, UInt32 and UInt64 have the
/// "limited support" PyTorch 2.3+ gives its unsigned types (creation, storage, views, indexing, casts, elementwise
/// arithmetic and comparisons, file formats); they come last so the values of the older members never change.</summary>
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
    Int16,
    UInt16,
    UInt32,
    UInt64,
}

public static class DTypes
{
    public static int ElementSize(this DType t) => t switch
    {
        DType.Bool or DType.UInt8 or DType.Int8 => 1,
        DType.Float16 or DType.BFloat16 or DType.Int16 or DType.UInt16 => 2,
        DType.Int32 or DType.Float32 or DType.UInt32 => 4,
        DType.Int64 or DType.Float64 or DType.UInt64 => 8,
        _ => throw Unknown(t),
    };

    public static bool IsFloatingPoint(this DType t) => t is DType.Float16 or DType.BFloat16 or DType.Float32 or DType.Float64;

    /// <summary>Integer types, signed or unsigned (bool is not one).</summary>
    public static bool IsIntegral(this DType t) => t is DType.UInt8 or DType.Int8 or DType.Int16 or DType.Int32 or DType.Int64
        or DType.UInt16 or DType.UInt32 or DType.UInt64;

    /// <summary>Unsigned integer types (uint8, uint16, uint32, uint64).</summary>
    public static bool IsUnsigned(this DType t) => t is DType.UInt8 or DType.UInt16 or DType.UInt32 or DType.UInt64;

    /// <summary>Width in bits of an integer type; 0 for any other.</summary>
    static int IntBits(DType t) => t.IsIntegral() ? t.ElementSize() * 8 : 0;

    internal static DTypeException Unknown(DType t) => new($"unknown dtype value {(int)t}");

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
        DType.Float64 => "torch.float64",
        DType.Int16 => "torch.int16",
        DType.UInt16 => "torch.uint16",
        DType.UInt32 => "torch.uint32",
        DType.UInt64 => "torch.uint64",
        _ => throw Unknown(t),
    };

    // Category: 0 bool, 1 integer, 2 floating.
    static int Category(DType t) => t == DType.Bool ? 0 : t.IsFloatingPoint() ? 2 : 1;

    /// <summary>
    /// Promotion of two tensors of equal standing: the higher category wins (bool &lt; int &lt; float); floats: the
    /// wider wins, and float16 with bfloat16 gives float32 (PyTorch). Integers: two signed or two unsigned types give
    /// the wider; a signed type wider than the unsigned one wins; otherwise the smallest signed type that holds both
    /// (uint8+int8 → int16, uint16+int16 → int32, uint32+int32 → int64, as PyTorch and NumPy), and uint64 with any
    /// signed type gives float64 (NumPy's rule; PyTorch refuses to promote uint16/32/64 with integers).
    /// </summary>
    public static DType Promote(DType a, DType b)
    {
        if (a == b) return a;
        int ca = Category(a), cb = Category(b);
        if (ca != cb) return ca > cb ? a : b;
        if (ca == 2)
        {
            if ((a == DType.Float16 && b == DType.BFloat16) || (a == DType.BFloat16 && b == DType.Float16)) return DType.Float32;
            return a.ElementSize() >= b.ElementSize() ? a : b;
        }
        bool ua = a.IsUnsigned(), ub = b.IsUnsigned();
        if (ua == ub) return IntBits(a) >= IntBits(b) ? a : b;
        var (u, s) = ua ? (a, b) : (b, a);
        if (IntBits(s) > IntBits(u)) return s;
        return IntBits(u) switch
        {
            8 => DType.Int16,
            16 => DType.Int32,
            32 => DType.Int64,
            _ => DType.Float64,
        };
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
        DType.Float64 => typeof(double),
        DType.Int16 => typeof(short),
        DType.UInt16 => typeof(ushort),
        DType.UInt32 => typeof(uint),
        DType.UInt64 => typeof(ulong),
        _ => throw Unknown(t),
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
        if (typeof(T) == typeof(short)) return DType.Int16;
        if (typeof(T) == typeof(ushort)) return DType.UInt16;
        if (typeof(T) == typeof(uint)) return DType.UInt32;
        if (typeof(T) == typeof(ulong)) return DType.UInt64;
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
