using System.Numerics;

namespace Nabla;

internal static partial class Cpu
{
    static long[] Indices(Tensor index, int bound, string op, int dim)
    {
        if (index.DType is not (DType.Int64 or DType.Int32))
            throw new DTypeException($"{op}: index must be int64 or int32, got {index.DType.TorchName()}");
        var idx = index.DType == DType.Int64 ? index.ContiguousData<long>() : Array.ConvertAll(index.ContiguousData<int>(), v => (long)v);
        var r = new long[idx.Length];
        for (int i = 0; i < idx.Length; i++)
        {
            long v = idx[i];
            if (v < -bound || v >= bound)
                throw new IndexOutOfBoundsException($"{op}: index {v} is out of bounds for dimension {dim} with size {bound}");
            r[i] = v < 0 ? v + bound : v;
        }
        return r;
    }

    public static Tensor IndexSelect(Tensor x, int d, Tensor index)
    {
        var idx = Indices(index, x.shape[d], "index_select", d);
        var (outer, n, inner) = Around(x.shape, d);
        var os = (int[])x.shape.Clone();
        os[d] = idx.Length;
        var r = Tensor.Empty(os, x.DType);
        switch (x.DType)
        {
            case DType.Float32: IndexSelectT(x.ContiguousData<float>(), r.storage.As<float>(), idx, outer, n, inner); break;
            case DType.Float64: IndexSelectT(x.ContiguousData<double>(), r.storage.As<double>(), idx, outer, n, inner); break;
            case DType.Int64: IndexSelectT(x.ContiguousData<long>(), r.storage.As<long>(), idx, outer, n, inner); break;
            case DType.Int32: IndexSelectT(x.ContiguousData<int>(), r.storage.As<int>(), idx, outer, n, inner); break;
            case DType.Int8: IndexSelectT(x.ContiguousData<sbyte>(), r.storage.As<sbyte>(), idx, outer, n, inner); break;
            case DType.UInt8: IndexSelectT(x.ContiguousData<byte>(), r.storage.As<byte>(), idx, outer, n, inner); break;
            case DType.Bool: IndexSelectT(x.ContiguousData<bool>(), r.storage.As<bool>(), idx, outer, n, inner); break;
            case DType.Float16: IndexSelectT(x.ContiguousData<Half>(), r.storage.As<Half>(), idx, outer, n, inner); break;
            case DType.BFloat16: IndexSelectT(x.ContiguousData<BFloat16>(), r.storage.As<BFloat16>(), idx, outer, n, inner); break;
            case DType.Int16: IndexSelectT(x.ContiguousData<short>(), r.storage.As<short>(), idx, outer, n, inner); break;
            case DType.UInt16: IndexSelectT(x.ContiguousData<ushort>(), r.storage.As<ushort>(), idx, outer, n, inner); break;
            case DType.UInt32: IndexSelectT(x.ContiguousData<uint>(), r.storage.As<uint>(), idx, outer, n, inner); break;
            case DType.UInt64: IndexSelectT(x.ContiguousData<ulong>(), r.storage.As<ulong>(), idx, outer, n, inner); break;
            default: throw DTypes.Unknown(x.DType);
        }
        return r;
    }

    static void IndexSelectT<T>(T[] src, T[] dst, long[] idx, int outer, int n, int inner)
    {
        int m = idx.Length;
        for (int o = 0; o < outer; o++)
        for (int j = 0; j < m; j++)
            Array.Copy(src, (o * n + (int)idx[j]) * inner, dst, (o * m + j) * inner, inner);
    }

    /// <summary>out = x with src's slices added at the given indices along d (duplicates accumulate).</summary>
    public static Tensor IndexAdd(Tensor x, int d, Tensor index, Tensor src)
    {
        var idx = Indices(index, x.shape[d], "index_add", d);
        var r = x.ContiguousCopyRaw();
        var (outer, n, inner) = Around(x.shape, d);
        var s = CastIfNeeded(src, x.DType);
        switch (x.DType)
        {
            case DType.Float32: IndexAddT(s.ContiguousData<float>(), r.storage.As<float>(), idx, outer, n, inner); break;
            case DType.Float64: IndexAddT(s.ContiguousData<double>(), r.storage.As<double>(), idx, outer, n, inner); break;
            case DType.Int64: IndexAddT(s.ContiguousData<long>(), r.storage.As<long>(), idx, outer, n, inner); break;
            case DType.Int32: IndexAddT(s.ContiguousData<int>(), r.storage.As<int>(), idx, outer, n, inner); break;
            case DType.Int16: IndexAddT(s.ContiguousData<short>(), r.storage.As<short>(), idx, outer, n, inner); break;
            case DType.UInt16: IndexAddT(s.ContiguousData<ushort>(), r.storage.As<ushort>(), idx, outer, n, inner); break;
            case DType.UInt32: IndexAddT(s.ContiguousData<uint>(), r.storage.As<uint>(), idx, outer, n, inner); break;
            case DType.UInt64: IndexAddT(s.ContiguousData<ulong>(), r.storage.As<ulong>(), idx, outer, n, inner); break;
            default: throw new DTypeException($"index_add: dtype {x.DType.TorchName()} is not supported");
        }
        return r;
    }

    static void IndexAddT<T>(T[] src, T[] dst, long[] idx, int outer, int n, int inner) where T : unmanaged, INumber<T>
    {
        int m = idx.Length;
        for (int o = 0; o < outer; o++)
        for (int j = 0; j < m; j++)
        {
            var d = dst.AsSpan((o * n + (int)idx[j]) * inner, inner);
            System.Numerics.Tensors.TensorPrimitives.Add(d, src.AsSpan((o * m + j) * inner, inner), d);
        }
    }

    /// <summary>
    /// Walks every position of <paramref name="index"/> (contiguous) and calls <paramref name="visit"/> with the flat
    /// position in index/src and the flat position in a contiguous tensor of <paramref name="target"/> shape, where
    /// the coordinate along <paramref name="d"/> is replaced by the index value.
    /// </summary>
    static void ForEachIndexed(int[] indexShape, long[] idx, int[] target, int d, string op, Action<int, int> visit)
    {
        int rank = indexShape.Length;
        var tStrides = Tensor.ContiguousStrides(target);
        var coord = new int[rank];
        int n = idx.Length;
        for (int p = 0; p < n; p++)
        {
            long v = idx[p];
            int bound = target[d];
            if (v < -bound || v >= bound)
                throw new IndexOutOfBoundsException($"{op}: index {v} is out of bounds for dimension {d} with size {bound}");
            if (v < 0) v += bound;
            int t = 0;
            for (int k = 0; k < rank; k++) t += (k == d ? (int)v : coord[k]) * tStrides[k];
            visit(p, t);
            for (int k = rank - 1; k >= 0; k--)
            {
                if (++coord[k] < indexShape[k]) break;
                coord[k] = 0;
            }
        }
    }

    static void CheckIndexShape(string op, Tensor x, Tensor index, int d, Tensor? src)
    {
        if (index.shape.Length != x.shape.Length)
            throw new ShapeMismatchException($"{op}: index has rank {index.shape.Length} (shape {ShapeUtil.Format(index.shape)}) but input has rank {x.shape.Length} (shape {ShapeUtil.Format(x.shape)})");
        for (int k = 0; k < x.shape.Length; k++)
        {
            if (k != d && index.shape[k] > x.shape[k])
                throw new ShapeMismatchException($"{op}: index size {index.shape[k]} exceeds input size {x.shape[k]} at dimension {k}; input {ShapeUtil.Format(x.shape)}, index {ShapeUtil.Format(index.shape)}");
            if (src is not null && index.shape[k] > src.shape[k])
                throw new ShapeMismatchException($"{op}: index size {index.shape[k]} exceeds src size {src.shape[k]} at dimension {k}; src {ShapeUtil.Format(src.shape)}, index {ShapeUtil.Format(index.shape)}");
        }
    }

    static long[] RawIndex(Tensor index, string op)
    {
        if (index.DType == DType.Int64) return index.ContiguousData<long>();
        if (index.DType == DType.Int32) return Array.ConvertAll(index.ContiguousData<int>(), v => (long)v);
        throw new DTypeException($"{op}: index must be int64, got {index.DType.TorchName()}");
    }

    public static Tensor Gather(Tensor x, int d, Tensor index)
    {
        CheckIndexShape("gather", x, index, d, null);
        var idx = RawIndex(index, "gather");
        var r = Tensor.Empty((int[])index.shape.Clone(), x.DType);
        var xc = x.ContiguousCopyRaw();
        switch (x.DType)
        {
            case DType.Float32: { var s = xc.storage.As<float>(); var o = r.storage.As<float>(); ForEachIndexed(index.shape, idx, x.shape, d, "gather", (p, t) => o[p] = s[t]); break; }
            case DType.Float64: { var s = xc.storage.As<double>(); var o = r.storage.As<double>(); ForEachIndexed(index.shape, idx, x.shape, d, "gather", (p, t) => o[p] = s[t]); break; }
            case DType.Int64: { var s = xc.storage.As<long>(); var o = r.storage.As<long>(); ForEachIndexed(index.shape, idx, x.shape, d, "gather", (p, t) => o[p] = s[t]); break; }
            default:
                if (x.DType.IsFloatingPoint()) ForEachIndexed(index.shape, idx, x.shape, d, "gather", (p, t) => WriteFromDouble(r.storage, p, ReadAsDouble(xc.storage, t)));
                else ForEachIndexed(index.shape, idx, x.shape, d, "gather", (p, t) => WriteFromInt64Bits(r.storage, p, ReadAsInt64Bits(xc.storage, t)));
                break;
        }
        return r;
    }

    /// <summary>Copy of x with src written (or added, when <paramref name="add"/>) at the gathered positions.</summary>
    public static Tensor Scatter(Tensor x, int d, Tensor index, Tensor src, bool add)
    {
        string op = add ? "scatter_add" : "scatter";
        CheckIndexShape(op, x, index, d, src);
        var idx = RawIndex(index, op);
        var r = x.ContiguousCopyRaw();
        // Positions of src follow the index's shape; src may be larger, so read it through its own strides.
        var sc = CastIfNeeded(src, x.DType).Detach().Slice0To(index.shape).ContiguousCopyRaw();
        switch (x.DType)
        {
            case DType.Float32:
            {
                var s = sc.storage.As<float>(); var o = r.storage.As<float>();
                if (add) ForEachIndexed(index.shape, idx, x.shape, d, op, (p, t) => o[t] += s[p]);
                else ForEachIndexed(index.shape, idx, x.shape, d, op, (p, t) => o[t] = s[p]);
                break;
            }
            case DType.Float64:
            {
                var s = sc.storage.As<double>(); var o = r.storage.As<double>();
                if (add) ForEachIndexed(index.shape, idx, x.shape, d, op, (p, t) => o[t] += s[p]);
                else ForEachIndexed(index.shape, idx, x.shape, d, op, (p, t) => o[t] = s[p]);
                break;
            }
            default:
                if (x.DType.IsFloatingPoint())
                {
                    if (add) ForEachIndexed(index.shape, idx, x.shape, d, op, (p, t) => WriteFromDouble(r.storage, t, ReadAsDouble(r.storage, t) + ReadAsDouble(sc.storage, p)));
                    else ForEachIndexed(index.shape, idx, x.shape, d, op, (p, t) => WriteFromDouble(r.storage, t, ReadAsDouble(sc.storage, p)));
                }
                else if (x.DType == DType.Bool)
                {
                    if (add) ForEachIndexed(index.shape, idx, x.shape, d, op, (p, t) => WriteFromInt64Bits(r.storage, t, ReadAsInt64Bits(r.storage, t) | ReadAsInt64Bits(sc.storage, p)));
                    else ForEachIndexed(index.shape, idx, x.shape, d, op, (p, t) => WriteFromInt64Bits(r.storage, t, ReadAsInt64Bits(sc.storage, p)));
                }
                else
                {
                    // Integers: exact and modular (the low bits of the 64-bit sum), no rounding through double.
                    if (add) ForEachIndexed(index.shape, idx, x.shape, d, op, (p, t) => WriteFromInt64Bits(r.storage, t, unchecked(ReadAsInt64Bits(r.storage, t) + ReadAsInt64Bits(sc.storage, p))));
                    else ForEachIndexed(index.shape, idx, x.shape, d, op, (p, t) => WriteFromInt64Bits(r.storage, t, ReadAsInt64Bits(sc.storage, p)));
                }
                break;
        }
        return r;
    }
}
