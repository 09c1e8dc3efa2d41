using System.Numerics;
using System.Numerics.Tensors;

namespace Nabla;

/// <summary>Elementwise map of two operands. Vec* are the SIMD paths for unit-stride rows; Apply is the scalar reference.</summary>
internal interface IMap2<TA, TB>
{
    static abstract TB Apply(TA a, TA b);
    static abstract void Vec(ReadOnlySpan<TA> a, ReadOnlySpan<TA> b, Span<TB> d);
    static abstract void VecScalarRight(ReadOnlySpan<TA> a, TA b, Span<TB> d);
    static abstract void VecScalarLeft(TA a, ReadOnlySpan<TA> b, Span<TB> d);
}

internal interface IMap1<TA, TB>
{
    static abstract TB Apply(TA a);
    static abstract void Vec(ReadOnlySpan<TA> a, Span<TB> d);
}

/// <summary>The CPU backend: strided copies and the shared drivers that walk layouts for every elementwise kernel.</summary>
internal static partial class Cpu
{
    /// <summary>Merges adjacent dimensions that are laid out contiguously for every operand, dropping size-1 dims.</summary>
    internal static (int[] shape, int[][] strides) Coalesce(int[] shape, params int[][] strides)
    {
        var sh = new List<int>();
        var st = new List<int>[strides.Length];
        for (int k = 0; k < strides.Length; k++) st[k] = new List<int>();
        for (int i = 0; i < shape.Length; i++)
        {
            if (shape[i] == 1) continue;
            if (sh.Count > 0)
            {
                bool merge = true;
                for (int k = 0; k < strides.Length; k++)
                    if (st[k][^1] != strides[k][i] * shape[i]) { merge = false; break; }
                if (merge)
                {
                    sh[^1] *= shape[i];
                    for (int k = 0; k < strides.Length; k++) st[k][^1] = strides[k][i];
                    continue;
                }
            }
            sh.Add(shape[i]);
            for (int k = 0; k < strides.Length; k++) st[k].Add(strides[k][i]);
        }
        if (sh.Count == 0)
        {
            sh.Add(1);
            for (int k = 0; k < strides.Length; k++) st[k].Add(1);
        }
        var rs = new int[strides.Length][];
        for (int k = 0; k < strides.Length; k++) rs[k] = st[k].ToArray();
        return (sh.ToArray(), rs);
    }

    public static void CopyStrided<T>(T[] src, int offset, int[] shape, int[] strides, Span<T> dst)
    {
        int numel = ShapeUtil.Numel(shape);
        if (numel == 0) return;
        var (cs, cst) = Coalesce(shape, strides);
        var s = cst[0];
        int rank = cs.Length, inner = cs[rank - 1], istr = s[rank - 1];
        int outer = numel / inner;
        Span<int> idx = stackalloc int[rank];
        int pos = offset, d = 0;
        for (int o = 0; o < outer; o++)
        {
            if (istr == 1) src.AsSpan(pos, inner).CopyTo(dst.Slice(d, inner));
            else
            {
                int p = pos;
                for (int j = 0; j < inner; j++, p += istr) dst[d + j] = src[p];
            }
            d += inner;
            for (int k = rank - 2; k >= 0; k--)
            {
                idx[k]++;
                pos += s[k];
                if (idx[k] < cs[k]) break;
                pos -= s[k] * cs[k];
                idx[k] = 0;
            }
        }
    }

    /// <summary>Writes a contiguous source into a strided destination (the inverse of <see cref="CopyStrided"/>).</summary>
    public static void ScatterStrided<T>(ReadOnlySpan<T> src, T[] dst, int offset, int[] shape, int[] strides)
    {
        int numel = ShapeUtil.Numel(shape);
        if (numel == 0) return;
        var (cs, cst) = Coalesce(shape, strides);
        var s = cst[0];
        int rank = cs.Length, inner = cs[rank - 1], istr = s[rank - 1];
        int outer = numel / inner;
        Span<int> idx = stackalloc int[rank];
        int pos = offset, d = 0;
        for (int o = 0; o < outer; o++)
        {
            if (istr == 1) src.Slice(d, inner).CopyTo(dst.AsSpan(pos, inner));
            else
            {
                int p = pos;
                for (int j = 0; j < inner; j++, p += istr) dst[p] = src[d + j];
            }
            d += inner;
            for (int k = rank - 2; k >= 0; k--)
            {
                idx[k]++;
                pos += s[k];
                if (idx[k] < cs[k]) break;
                pos -= s[k] * cs[k];
                idx[k] = 0;
            }
        }
    }

    public static double ReadAsDouble(Storage s, int index) => s.DType switch
    {
        DType.Float32 => s.As<float>()[index],
        DType.Float64 => s.As<double>()[index],
        DType.Int64 => s.As<long>()[index],
        DType.Int32 => s.As<int>()[index],
        DType.Int8 => s.As<sbyte>()[index],
        DType.UInt8 => s.As<byte>()[index],
        DType.Bool => s.As<bool>()[index] ? 1 : 0,
        DType.Float16 => (double)s.As<Half>()[index],
        DType.BFloat16 => (float)s.As<BFloat16>()[index],
        DType.Int16 => s.As<short>()[index],
        DType.UInt16 => s.As<ushort>()[index],
        DType.UInt32 => s.As<uint>()[index],
        DType.UInt64 => s.As<ulong>()[index],
        _ => throw DTypes.Unknown(s.DType),
    };

    /// <summary>An integer or bool element as the 64 bits of an int64 (uint64 reinterpreted, not converted).</summary>
    public static long ReadAsInt64Bits(Storage s, int index) => s.DType switch
    {
        DType.Bool => s.As<bool>()[index] ? 1 : 0,
        DType.UInt8 => s.As<byte>()[index],
        DType.Int8 => s.As<sbyte>()[index],
        DType.Int16 => s.As<short>()[index],
        DType.UInt16 => s.As<ushort>()[index],
        DType.Int32 => s.As<int>()[index],
        DType.UInt32 => s.As<uint>()[index],
        DType.Int64 => s.As<long>()[index],
        DType.UInt64 => unchecked((long)s.As<ulong>()[index]),
        _ => throw new DTypeException($"integer read: {s.DType.TorchName()} is not an integer type"),
    };

    /// <summary>Writes the low bits of <paramref name="v"/> (C's modular conversion); bool takes v != 0.</summary>
    public static void WriteFromInt64Bits(Storage s, int index, long v)
    {
        unchecked
        {
            switch (s.DType)
            {
                case DType.Bool: s.As<bool>()[index] = v != 0; break;
                case DType.UInt8: s.As<byte>()[index] = (byte)v; break;
                case DType.Int8: s.As<sbyte>()[index] = (sbyte)v; break;
                case DType.Int16: s.As<short>()[index] = (short)v; break;
                case DType.UInt16: s.As<ushort>()[index] = (ushort)v; break;
                case DType.Int32: s.As<int>()[index] = (int)v; break;
                case DType.UInt32: s.As<uint>()[index] = (uint)v; break;
                case DType.Int64: s.As<long>()[index] = v; break;
                case DType.UInt64: s.As<ulong>()[index] = (ulong)v; break;
                default: throw new DTypeException($"integer write: {s.DType.TorchName()} is not an integer type");
            }
        }
    }

    /// <summary>Elementwise kernels split their output across threads from this many elements on (memory-bound work).</summary>
    internal const int ParallelElements = 1 << 17;

    /// <summary>How many contiguous pieces an elementwise output of <paramref name="numel"/> elements is split into.</summary>
    static int ElementwiseParts(int numel) => Gemm.Threads > 1 && numel >= ParallelElements ? Math.Min(Gemm.Threads, numel / (ParallelElements / 2)) : 1;

    /// <summary>Binary map over broadcast operands into a fresh contiguous tensor.</summary>
    public static Tensor Map2<TA, TB, TK>(Tensor a, Tensor b, int[] outShape, DType outType) where TK : IMap2<TA, TB>
    {
        var result = Tensor.Empty(outShape, outType);
        int numel = result.NumElements;
        if (numel == 0) return result;
        var dst = result.storage.As<TB>();
        var sa = a.storage.As<TA>();
        var sb = b.storage.As<TA>();
        int parts = ElementwiseParts(numel);
        // Fast paths without layout analysis: equal contiguous shapes, or a contiguous tensor and a one-element operand.
        bool aFull = a.NumElements == numel && a.IsContiguous, bFull = b.NumElements == numel && b.IsContiguous;
        int mode = aFull && bFull ? 0 : aFull && b.NumElements == 1 ? 1 : bFull && a.NumElements == 1 ? 2 : -1;
        if (mode >= 0)
        {
            if (parts == 1) Map2Flat<TA, TB, TK>(mode, sa, a.offset, sb, b.offset, dst, 0, numel);
            else Map2FlatParallel<TA, TB, TK>(mode, sa, a.offset, sb, b.offset, dst, numel, parts);
            return result;
        }
        var (cs, cst) = Coalesce(outShape, ShapeUtil.BroadcastStrides(a, outShape), ShapeUtil.BroadcastStrides(b, outShape));
        int outer = numel / cs[^1];
        parts = Math.Min(parts, outer);
        if (parts <= 1) Map2Rows<TA, TB, TK>(sa, a.offset, cst[0], sb, b.offset, cst[1], cs, dst, 0, outer);
        else Map2RowsParallel<TA, TB, TK>(sa, a.offset, cst[0], sb, b.offset, cst[1], cs, dst, outer, parts);
        return result;
    }

    /// <summary>Elements [start, start + len) of a flat map: mode 0 both full, 1 scalar right, 2 scalar left.</summary>
    static void Map2Flat<TA, TB, TK>(int mode, TA[] sa, int ao, TA[] sb, int bo, TB[] dst, int start, int len) where TK : IMap2<TA, TB>
    {
        var d = dst.AsSpan(start, len);
        if (mode == 0) TK.Vec(sa.AsSpan(ao + start, len), sb.AsSpan(bo + start, len), d);
        else if (mode == 1) TK.VecScalarRight(sa.AsSpan(ao + start, len), sb[bo], d);
        else TK.VecScalarLeft(sa[ao], sb.AsSpan(bo + start, len), d);
    }

    static void Map2FlatParallel<TA, TB, TK>(int mode, TA[] sa, int ao, TA[] sb, int bo, TB[] dst, int numel, int parts) where TK : IMap2<TA, TB>
    {
        int chunk = (numel + parts - 1) / parts;
        WorkerPool.For(parts, parts,
            p => Map2Flat<TA, TB, TK>(mode, sa, ao, sb, bo, dst, p * chunk, Math.Min(chunk, numel - p * chunk)));
    }

    /// <summary>Rows [o0, o1) of the coalesced layout (innermost dim contiguous in the output); the odometer starts at o0's coordinates.</summary>
    static void Map2Rows<TA, TB, TK>(TA[] sa, int aOff, int[] stA, TA[] sb, int bOff, int[] stB, int[] cs, TB[] dstArr, int o0, int o1) where TK : IMap2<TA, TB>
    {
        int rank = cs.Length, inner = cs[rank - 1], ia = stA[rank - 1], ib = stB[rank - 1];
        Span<int> idx = stackalloc int[rank];
        int pa = aOff, pb = bOff, rem = o0;
        for (int k = rank - 2; k >= 0; k--)
        {
            idx[k] = rem % cs[k];
            rem /= cs[k];
            pa += idx[k] * stA[k];
            pb += idx[k] * stB[k];
        }
        var dst = dstArr.AsSpan();
        int d = o0 * inner;
        for (int o = o0; o < o1; o++)
        {
            var drow = dst.Slice(d, inner);
            if (ia == 1 && ib == 1) TK.Vec(sa.AsSpan(pa, inner), sb.AsSpan(pb, inner), drow);
            else if (ia == 1 && ib == 0) TK.VecScalarRight(sa.AsSpan(pa, inner), sb[pb], drow);
            else if (ia == 0 && ib == 1) TK.VecScalarLeft(sa[pa], sb.AsSpan(pb, inner), drow);
            else
            {
                int qa = pa, qb = pb;
                for (int j = 0; j < inner; j++, qa += ia, qb += ib) drow[j] = TK.Apply(sa[qa], sb[qb]);
            }
            d += inner;
            for (int k = rank - 2; k >= 0; k--)
            {
                idx[k]++;
                pa += stA[k];
                pb += stB[k];
                if (idx[k] < cs[k]) break;
                pa -= stA[k] * cs[k];
                pb -= stB[k] * cs[k];
                idx[k] = 0;
            }
        }
    }

    static void Map2RowsParallel<TA, TB, TK>(TA[] sa, int aOff, int[] stA, TA[] sb, int bOff, int[] stB, int[] cs, TB[] dst, int outer, int parts) where TK : IMap2<TA, TB>
    {
        int chunk = (outer + parts - 1) / parts;
        WorkerPool.For(parts, parts,
            p => Map2Rows<TA, TB, TK>(sa, aOff, stA, sb, bOff, stB, cs, dst, p * chunk, Math.Min(outer, (p + 1) * chunk)));
    }

    /// <summary>Unary map into a fresh contiguous tensor of the same shape.</summary>
    public static Tensor Map1<TA, TB, TK>(Tensor a, DType outType) where TK : IMap1<TA, TB>
    {
        var result = Tensor.Empty((int[])a.shape.Clone(), outType);
        // Some TensorPrimitives kernels (Sigmoid) reject empty spans.
        int numel = result.NumElements;
        if (numel == 0) return result;
        int parts = ElementwiseParts(numel);
        if (parts == 1)
        {
            var src = a.IsContiguous ? a.storage.As<TA>().AsSpan(a.offset, numel) : a.ContiguousData<TA>();
            TK.Vec(src, result.storage.As<TB>());
        }
        else if (a.IsContiguous) Map1Parallel<TA, TB, TK>(a.storage.As<TA>(), a.offset, result.storage.As<TB>(), numel, parts);
        else Map1Parallel<TA, TB, TK>(a.ContiguousData<TA>(), 0, result.storage.As<TB>(), numel, parts);
        return result;
    }

    static void Map1Parallel<TA, TB, TK>(TA[] src, int so, TB[] dst, int numel, int parts) where TK : IMap1<TA, TB>
    {
        int chunk = (numel + parts - 1) / parts;
        WorkerPool.For(parts, parts, p =>
        {
            int start = p * chunk, len = Math.Min(chunk, numel - start);
            TK.Vec(src.AsSpan(so + start, len), dst.AsSpan(start, len));
        });
    }

    /// <summary>Copies any tensor into a contiguous tensor of another dtype.</summary>
    public static Tensor Cast(Tensor a, DType to)
    {
        var src = a.Contiguous();
        var result = Tensor.Empty((int[])a.shape.Clone(), to);
        int n = a.NumElements;
        if (a.DType == DType.Float32 && to == DType.Float64)
        {
            var s = src.ContiguousSpan<float>(); var d = result.storage.As<double>();
            for (int i = 0; i < n; i++) d[i] = s[i];
        }
        else if (a.DType == DType.Float64 && to == DType.Float32)
        {
            var s = src.ContiguousSpan<double>(); var d = result.storage.As<float>();
            for (int i = 0; i < n; i++) d[i] = (float)s[i];
        }
        else if (a.DType == DType.Float32 && to == DType.Float16)
            TensorPrimitives.ConvertToHalf(src.ContiguousSpan<float>(), result.storage.As<Half>());
        else if (a.DType == DType.Float16 && to == DType.Float32)
            TensorPrimitives.ConvertToSingle(src.ContiguousSpan<Half>(), result.storage.As<float>());
        else if (!a.DType.IsFloatingPoint() && !to.IsFloatingPoint())
        {
            // Integer and bool to integer: exact, through the 64 bits (no detour through double, which would round
            // int64/uint64 values above 2^53); narrowing keeps the low bits.
            for (int i = 0; i < n; i++) WriteFromInt64Bits(result.storage, i, ReadAsInt64Bits(src.storage, src.offset + i));
        }
        else
        {
            for (int i = 0; i < n; i++) WriteFromDouble(result.storage, i, ReadAsDouble(src.storage, src.offset + i));
        }
        return result;
    }

    public static void WriteFromDouble(Storage s, int index, double v)
    {
        switch (s.DType)
        {
            case DType.Float32: s.As<float>()[index] = (float)v; break;
            case DType.Float64: s.As<double>()[index] = v; break;
            case DType.Int64: s.As<long>()[index] = Scalar.FromDouble<long>(v); break;
            case DType.Int32: s.As<int>()[index] = Scalar.FromDouble<int>(v); break;
            case DType.Int8: s.As<sbyte>()[index] = Scalar.FromDouble<sbyte>(v); break;
            case DType.UInt8: s.As<byte>()[index] = Scalar.FromDouble<byte>(v); break;
            case DType.Bool: s.As<bool>()[index] = v != 0; break;
            case DType.Float16: s.As<Half>()[index] = (Half)v; break;
            case DType.BFloat16: s.As<BFloat16>()[index] = (BFloat16)(float)v; break;
            case DType.Int16: s.As<short>()[index] = Scalar.FromDouble<short>(v); break;
            case DType.UInt16: s.As<ushort>()[index] = Scalar.FromDouble<ushort>(v); break;
            case DType.UInt32: s.As<uint>()[index] = Scalar.FromDouble<uint>(v); break;
            case DType.UInt64: s.As<ulong>()[index] = Scalar.DoubleToUInt64(v); break;
            default: throw DTypes.Unknown(s.DType);
        }
    }
}

// ---- arithmetic kernels (every numeric type) ----

internal struct Arith<T, TOp> : IMap2<T, T> where T : unmanaged, INumber<T> where TOp : IArithOp
{
    public static T Apply(T a, T b) => TOp.Apply(a, b);
    public static void Vec(ReadOnlySpan<T> a, ReadOnlySpan<T> b, Span<T> d) => TOp.Vec(a, b, d);
    public static void VecScalarRight(ReadOnlySpan<T> a, T b, Span<T> d) => TOp.VecScalarRight(a, b, d);
    public static void VecScalarLeft(T a, ReadOnlySpan<T> b, Span<T> d) => TOp.VecScalarLeft(a, b, d);
}

internal interface IArithOp
{
    static abstract T Apply<T>(T a, T b) where T : unmanaged, INumber<T>;
    static abstract void Vec<T>(ReadOnlySpan<T> a, ReadOnlySpan<T> b, Span<T> d) where T : unmanaged, INumber<T>;
    static abstract void VecScalarRight<T>(ReadOnlySpan<T> a, T b, Span<T> d) where T : unmanaged, INumber<T>;
    static abstract void VecScalarLeft<T>(T a, ReadOnlySpan<T> b, Span<T> d) where T : unmanaged, INumber<T>;
}

internal struct AddOp : IArithOp
{
    public static T Apply<T>(T a, T b) where T : unmanaged, INumber<T> => a + b;
    public static void Vec<T>(ReadOnlySpan<T> a, ReadOnlySpan<T> b, Span<T> d) where T : unmanaged, INumber<T> => TensorPrimitives.Add(a, b, d);
    public static void VecScalarRight<T>(ReadOnlySpan<T> a, T b, Span<T> d) where T : unmanaged, INumber<T> => TensorPrimitives.Add(a, b, d);
    public static void VecScalarLeft<T>(T a, ReadOnlySpan<T> b, Span<T> d) where T : unmanaged, INumber<T> => TensorPrimitives.Add(b, a, d);
}

internal struct SubOp : IArithOp
{
    public static T Apply<T>(T a, T b) where T : unmanaged, INumber<T> => a - b;
    public static void Vec<T>(ReadOnlySpan<T> a, ReadOnlySpan<T> b, Span<T> d) where T : unmanaged, INumber<T> => TensorPrimitives.Subtract(a, b, d);
    public static void VecScalarRight<T>(ReadOnlySpan<T> a, T b, Span<T> d) where T : unmanaged, INumber<T> => TensorPrimitives.Subtract(a, b, d);
    public static void VecScalarLeft<T>(T a, ReadOnlySpan<T> b, Span<T> d) where T : unmanaged, INumber<T> => TensorPrimitives.Subtract(a, b, d);
}

internal struct MulOp : IArithOp
{
    public static T Apply<T>(T a, T b) where T : unmanaged, INumber<T> => a * b;
    public static void Vec<T>(ReadOnlySpan<T> a, ReadOnlySpan<T> b, Span<T> d) where T : unmanaged, INumber<T> => TensorPrimitives.Multiply(a, b, d);
    public static void VecScalarRight<T>(ReadOnlySpan<T> a, T b, Span<T> d) where T : unmanaged, INumber<T> => TensorPrimitives.Multiply(a, b, d);
    public static void VecScalarLeft<T>(T a, ReadOnlySpan<T> b, Span<T> d) where T : unmanaged, INumber<T> => TensorPrimitives.Multiply(b, a, d);
}

internal struct DivOp : IArithOp
{
    public static T Apply<T>(T a, T b) where T : unmanaged, INumber<T> => a / b;
    public static void Vec<T>(ReadOnlySpan<T> a, ReadOnlySpan<T> b, Span<T> d) where T : unmanaged, INumber<T> => TensorPrimitives.Divide(a, b, d);
    public static void VecScalarRight<T>(ReadOnlySpan<T> a, T b, Span<T> d) where T : unmanaged, INumber<T> => TensorPrimitives.Divide(a, b, d);
    public static void VecScalarLeft<T>(T a, ReadOnlySpan<T> b, Span<T> d) where T : unmanaged, INumber<T> => TensorPrimitives.Divide(a, b, d);
}

internal struct MaxOp : IArithOp
{
    // NOTE: NaN propagates, as torch.maximum does.
    public static T Apply<T>(T a, T b) where T : unmanaged, INumber<T> => T.IsNaN(a) || a > b ? a : b;
    public static void Vec<T>(ReadOnlySpan<T> a, ReadOnlySpan<T> b, Span<T> d) where T : unmanaged, INumber<T> { for (int i = 0; i < d.Length; i++) d[i] = Apply(a[i], b[i]); }
    public static void VecScalarRight<T>(ReadOnlySpan<T> a, T b, Span<T> d) where T : unmanaged, INumber<T> { for (int i = 0; i < d.Length; i++) d[i] = Apply(a[i], b); }
    public static void VecScalarLeft<T>(T a, ReadOnlySpan<T> b, Span<T> d) where T : unmanaged, INumber<T> { for (int i = 0; i < d.Length; i++) d[i] = Apply(a, b[i]); }
}

internal struct MinOp : IArithOp
{
    public static T Apply<T>(T a, T b) where T : unmanaged, INumber<T> => T.IsNaN(a) || a < b ? a : b;
    public static void Vec<T>(ReadOnlySpan<T> a, ReadOnlySpan<T> b, Span<T> d) where T : unmanaged, INumber<T> { for (int i = 0; i < d.Length; i++) d[i] = Apply(a[i], b[i]); }
    public static void VecScalarRight<T>(ReadOnlySpan<T> a, T b, Span<T> d) where T : unmanaged, INumber<T> { for (int i = 0; i < d.Length; i++) d[i] = Apply(a[i], b); }
    public static void VecScalarLeft<T>(T a, ReadOnlySpan<T> b, Span<T> d) where T : unmanaged, INumber<T> { for (int i = 0; i < d.Length; i++) d[i] = Apply(a, b[i]); }
}

// ---- comparisons (bool results) ----

internal interface ICmpOp
{
    static abstract bool Apply<T>(T a, T b) where T : unmanaged, INumber<T>;
}

internal struct Cmp<T, TOp> : IMap2<T, bool> where T : unmanaged, INumber<T> where TOp : ICmpOp
{
    public static bool Apply(T a, T b) => TOp.Apply(a, b);
    public static void Vec(ReadOnlySpan<T> a, ReadOnlySpan<T> b, Span<bool> d) { for (int i = 0; i < d.Length; i++) d[i] = TOp.Apply(a[i], b[i]); }
    public static void VecScalarRight(ReadOnlySpan<T> a, T b, Span<bool> d) { for (int i = 0; i < d.Length; i++) d[i] = TOp.Apply(a[i], b); }
    public static void VecScalarLeft(T a, ReadOnlySpan<T> b, Span<bool> d) { for (int i = 0; i < d.Length; i++) d[i] = TOp.Apply(a, b[i]); }
}

internal struct EqOp : ICmpOp { public static bool Apply<T>(T a, T b) where T : unmanaged, INumber<T> => a == b; }
internal struct NeOp : ICmpOp { public static bool Apply<T>(T a, T b) where T : unmanaged, INumber<T> => a != b; }
internal struct LtOp : ICmpOp { public static bool Apply<T>(T a, T b) where T : unmanaged, INumber<T> => a < b; }
internal struct LeOp : ICmpOp { public static bool Apply<T>(T a, T b) where T : unmanaged, INumber<T> => a <= b; }
internal struct GtOp : ICmpOp { public static bool Apply<T>(T a, T b) where T : unmanaged, INumber<T> => a > b; }
internal struct GeOp : ICmpOp { public static bool Apply<T>(T a, T b) where T : unmanaged, INumber<T> => a >= b; }

internal struct BoolAnd : IMap2<bool, bool>
{
    public static bool Apply(bool a, bool b) => a & b;
    public static void Vec(ReadOnlySpan<bool> a, ReadOnlySpan<bool> b, Span<bool> d) { for (int i = 0; i < d.Length; i++) d[i] = a[i] & b[i]; }
    public static void VecScalarRight(ReadOnlySpan<bool> a, bool b, Span<bool> d) { for (int i = 0; i < d.Length; i++) d[i] = a[i] & b; }
    public static void VecScalarLeft(bool a, ReadOnlySpan<bool> b, Span<bool> d) { for (int i = 0; i < d.Length; i++) d[i] = a & b[i]; }
}

internal struct BoolOr : IMap2<bool, bool>
{
    public static bool Apply(bool a, bool b) => a | b;
    public static void Vec(ReadOnlySpan<bool> a, ReadOnlySpan<bool> b, Span<bool> d) { for (int i = 0; i < d.Length; i++) d[i] = a[i] | b[i]; }
    public static void VecScalarRight(ReadOnlySpan<bool> a, bool b, Span<bool> d) { for (int i = 0; i < d.Length; i++) d[i] = a[i] | b; }
    public static void VecScalarLeft(bool a, ReadOnlySpan<bool> b, Span<bool> d) { for (int i = 0; i < d.Length; i++) d[i] = a | b[i]; }
}

internal struct BoolXor : IMap2<bool, bool>
{
    public static bool Apply(bool a, bool b) => a ^ b;
    public static void Vec(ReadOnlySpan<bool> a, ReadOnlySpan<bool> b, Span<bool> d) { for (int i = 0; i < d.Length; i++) d[i] = a[i] ^ b[i]; }
    public static void VecScalarRight(ReadOnlySpan<bool> a, bool b, Span<bool> d) { for (int i = 0; i < d.Length; i++) d[i] = a[i] ^ b; }
    public static void VecScalarLeft(bool a, ReadOnlySpan<bool> b, Span<bool> d) { for (int i = 0; i < d.Length; i++) d[i] = a ^ b[i]; }
}

// ---- floating unary and binary kernels (float and double) ----

internal interface IFloatOp1
{
    static abstract T Apply<T>(T x) where T : unmanaged, IFloatingPointIeee754<T>;
    static abstract void Vec<T>(ReadOnlySpan<T> x, Span<T> d) where T : unmanaged, IFloatingPointIeee754<T>;
}

internal struct Float1<T, TOp> : IMap1<T, T> where T : unmanaged, IFloatingPointIeee754<T> where TOp : IFloatOp1
{
    public static T Apply(T a) => TOp.Apply(a);
    public static void Vec(ReadOnlySpan<T> a, Span<T> d) => TOp.Vec(a, d);
}

internal interface IFloatOp2
{
    static abstract T Apply<T>(T a, T b) where T : unmanaged, IFloatingPointIeee754<T>;
}

internal struct Float2<T, TOp> : IMap2<T, T> where T : unmanaged, IFloatingPointIeee754<T> where TOp : IFloatOp2
{
    public static T Apply(T a, T b) => TOp.Apply(a, b);
    public static void Vec(ReadOnlySpan<T> a, ReadOnlySpan<T> b, Span<T> d) { for (int i = 0; i < d.Length; i++) d[i] = TOp.Apply(a[i], b[i]); }
    public static void VecScalarRight(ReadOnlySpan<T> a, T b, Span<T> d) { for (int i = 0; i < d.Length; i++) d[i] = TOp.Apply(a[i], b); }
    public static void VecScalarLeft(T a, ReadOnlySpan<T> b, Span<T> d) { for (int i = 0; i < d.Length; i++) d[i] = TOp.Apply(a, b[i]); }
}

internal struct PowOp : IFloatOp2 { public static T Apply<T>(T a, T b) where T : unmanaged, IFloatingPointIeee754<T> => T.Pow(a, b); }

/// <summary>Relu's gradient mask times the incoming gradient: g where x &gt; 0, else 0.</summary>
internal struct ReluBackwardOp : IFloatOp2 { public static T Apply<T>(T g, T x) where T : unmanaged, IFloatingPointIeee754<T> => x > T.Zero ? g : T.Zero; }

internal struct ExpOp : IFloatOp1
{
    public static T Apply<T>(T x) where T : unmanaged, IFloatingPointIeee754<T> => T.Exp(x);
    public static void Vec<T>(ReadOnlySpan<T> x, Span<T> d) where T : unmanaged, IFloatingPointIeee754<T> => TensorPrimitives.Exp(x, d);
}
internal struct LogOp : IFloatOp1
{
    public static T Apply<T>(T x) where T : unmanaged, IFloatingPointIeee754<T> => T.Log(x);
    public static void Vec<T>(ReadOnlySpan<T> x, Span<T> d) where T : unmanaged, IFloatingPointIeee754<T> => TensorPrimitives.Log(x, d);
}
internal struct Log1pOp : IFloatOp1
{
    public static T Apply<T>(T x) where T : unmanaged, IFloatingPointIeee754<T> => T.LogP1(x);
    public static void Vec<T>(ReadOnlySpan<T> x, Span<T> d) where T : unmanaged, IFloatingPointIeee754<T> { for (int i = 0; i < d.Length; i++) d[i] = T.LogP1(x[i]); }
}
internal struct Expm1Op : IFloatOp1
{
    public static T Apply<T>(T x) where T : unmanaged, IFloatingPointIeee754<T> => T.ExpM1(x);
    public static void Vec<T>(ReadOnlySpan<T> x, Span<T> d) where T : unmanaged, IFloatingPointIeee754<T> { for (int i = 0; i < d.Length; i++) d[i] = T.ExpM1(x[i]); }
}
internal struct SqrtOp : IFloatOp1
{
    public static T Apply<T>(T x) where T : unmanaged, IFloatingPointIeee754<T> => T.Sqrt(x);
    public static void Vec<T>(ReadOnlySpan<T> x, Span<T> d) where T : unmanaged, IFloatingPointIeee754<T> => TensorPrimitives.Sqrt(x, d);
}
internal struct NegOp : IFloatOp1
{
    public static T Apply<T>(T x) where T : unmanaged, IFloatingPointIeee754<T> => -x;
    public static void Vec<T>(ReadOnlySpan<T> x, Span<T> d) where T : unmanaged, IFloatingPointIeee754<T> => TensorPrimitives.Negate(x, d);
}
internal struct AbsOp : IFloatOp1
{
    public static T Apply<T>(T x) where T : unmanaged, IFloatingPointIeee754<T> => T.Abs(x);
    public static void Vec<T>(ReadOnlySpan<T> x, Span<T> d) where T : unmanaged, IFloatingPointIeee754<T> => TensorPrimitives.Abs(x, d);
}
internal struct SignOp : IFloatOp1
{
    public static T Apply<T>(T x) where T : unmanaged, IFloatingPointIeee754<T> => T.IsNaN(x) ? x : x > T.Zero ? T.One : x < T.Zero ? -T.One : T.Zero;
    public static void Vec<T>(ReadOnlySpan<T> x, Span<T> d) where T : unmanaged, IFloatingPointIeee754<T> { for (int i = 0; i < d.Length; i++) d[i] = Apply(x[i]); }
}
internal struct FloorOp : IFloatOp1
{
    public static T Apply<T>(T x) where T : unmanaged, IFloatingPointIeee754<T> => T.Floor(x);
    public static void Vec<T>(ReadOnlySpan<T> x, Span<T> d) where T : unmanaged, IFloatingPointIeee754<T> { for (int i = 0; i < d.Length; i++) d[i] = T.Floor(x[i]); }
}
internal struct CeilOp : IFloatOp1
{
    public static T Apply<T>(T x) where T : unmanaged, IFloatingPointIeee754<T> => T.Ceiling(x);
    public static void Vec<T>(ReadOnlySpan<T> x, Span<T> d) where T : unmanaged, IFloatingPointIeee754<T> { for (int i = 0; i < d.Length; i++) d[i] = T.Ceiling(x[i]); }
}
internal struct RoundOp : IFloatOp1
{
    // NOTE: round half to even, as torch.round does.
    public static T Apply<T>(T x) where T : unmanaged, IFloatingPointIeee754<T> => T.Round(x, MidpointRounding.ToEven);
    public static void Vec<T>(ReadOnlySpan<T> x, Span<T> d) where T : unmanaged, IFloatingPointIeee754<T> { for (int i = 0; i < d.Length; i++) d[i] = Apply(x[i]); }
}
internal struct SinOp : IFloatOp1
{
    public static T Apply<T>(T x) where T : unmanaged, IFloatingPointIeee754<T> => T.Sin(x);
    public static void Vec<T>(ReadOnlySpan<T> x, Span<T> d) where T : unmanaged, IFloatingPointIeee754<T> => TensorPrimitives.Sin(x, d);
}
internal struct CosOp : IFloatOp1
{
    public static T Apply<T>(T x) where T : unmanaged, IFloatingPointIeee754<T> => T.Cos(x);
    public static void Vec<T>(ReadOnlySpan<T> x, Span<T> d) where T : unmanaged, IFloatingPointIeee754<T> => TensorPrimitives.Cos(x, d);
}
internal struct TanhOp : IFloatOp1
{
    public static T Apply<T>(T x) where T : unmanaged, IFloatingPointIeee754<T> => T.Tanh(x);
    public static void Vec<T>(ReadOnlySpan<T> x, Span<T> d) where T : unmanaged, IFloatingPointIeee754<T> => TensorPrimitives.Tanh(x, d);
}
internal struct SigmoidOp : IFloatOp1
{
    public static T Apply<T>(T x) where T : unmanaged, IFloatingPointIeee754<T> => T.One / (T.One + T.Exp(-x));
    public static void Vec<T>(ReadOnlySpan<T> x, Span<T> d) where T : unmanaged, IFloatingPointIeee754<T> => TensorPrimitives.Sigmoid(x, d);
}
internal struct ReluOp : IFloatOp1
{
    public static T Apply<T>(T x) where T : unmanaged, IFloatingPointIeee754<T> => T.IsNaN(x) ? x : x > T.Zero ? x : T.Zero;
    public static void Vec<T>(ReadOnlySpan<T> x, Span<T> d) where T : unmanaged, IFloatingPointIeee754<T> => TensorPrimitives.Max(x, T.Zero, d);
}
internal struct ErfOp : IFloatOp1
{
    public static T Apply<T>(T x) where T : unmanaged, IFloatingPointIeee754<T> => T.CreateTruncating(SpecialFunctions.Erf(double.CreateTruncating(x)));
    public static void Vec<T>(ReadOnlySpan<T> x, Span<T> d) where T : unmanaged, IFloatingPointIeee754<T> { for (int i = 0; i < d.Length; i++) d[i] = Apply(x[i]); }
}
