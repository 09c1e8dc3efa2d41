using System.Numerics;
using System.Numerics.Tensors;

namespace Nabla;

internal static partial class Cpu
{
    /// <summary>Views a contiguous tensor as [outer, n, inner] around dimension <paramref name="d"/>.</summary>
    public static (int outer, int n, int inner) Around(int[] shape, int d)
    {
        int outer = 1, inner = 1;
        for (int i = 0; i < d; i++) outer *= shape[i];
        for (int i = d + 1; i < shape.Length; i++) inner *= shape[i];
        return (outer, shape.Length == 0 ? 1 : shape[d], inner);
    }

    static int[] KeepDimShape(int[] shape, int d)
    {
        var s = (int[])shape.Clone();
        if (s.Length > 0) s[d] = 1;
        return s;
    }

    /// <summary>Sum over one dimension, keeping it with size 1. Integers and bool sum into int64 (uint64 into uint64, modulo 2^64).</summary>
    public static Tensor SumDim(Tensor x, int d)
    {
        var dt = x.DType;
        if (dt is DType.Float16 or DType.BFloat16) return Cast(SumDim(Cast(x, DType.Float32), d), dt);
        if (!dt.IsFloatingPoint() && dt is not (DType.Int64 or DType.UInt64)) return SumDim(Cast(x, DType.Int64), d);
        return dt switch
        {
            DType.Float32 => SumDimT<float>(x, d),
            DType.Float64 => SumDimT<double>(x, d),
            DType.Int64 => SumDimT<long>(x, d),
            DType.UInt64 => SumDimT<ulong>(x, d),
            _ => throw new DTypeException($"sum: dtype {dt.TorchName()} is not supported"),
        };
    }

    static Tensor SumDimT<T>(Tensor x, int d) where T : unmanaged, INumber<T>
    {
        var src = x.ContiguousData<T>();
        var (outer, n, inner) = Around(x.shape, d);
        var r = Tensor.Empty(KeepDimShape(x.shape, d), x.DType);
        var dst = r.storage.As<T>();
        if (inner == 1)
        {
            for (int o = 0; o < outer; o++) dst[o] = TensorPrimitives.Sum<T>(src.AsSpan(o * n, n));
        }
        else
        {
            for (int o = 0; o < outer; o++)
            {
                var row = dst.AsSpan(o * inner, inner);
                row.Clear();
                for (int j = 0; j < n; j++) TensorPrimitives.Add(row, src.AsSpan((o * n + j) * inner, inner), row);
            }
        }
        return r;
    }

    public static Tensor ProdDim(Tensor x, int d)
    {
        var c = Cast(x, DType.Float64);
        var src = c.storage.As<double>();
        var (outer, n, inner) = Around(x.shape, d);
        var r = Tensor.Empty(KeepDimShape(x.shape, d), DType.Float64);
        var dst = r.storage.As<double>();
        for (int o = 0; o < outer; o++)
        for (int i = 0; i < inner; i++)
        {
            double p = 1;
            for (int j = 0; j < n; j++) p *= src[(o * n + j) * inner + i];
            dst[o * inner + i] = p;
        }
        var outType = x.DType.IsFloatingPoint() ? x.DType : DType.Int64;
        return CastIfNeeded(r, outType);
    }

    /// <summary>For each element, the product of the other elements along <paramref name="d"/> (prod's gradient factor).</summary>
    public static Tensor ProdOthers(Tensor x, int d)
    {
        var c = Cast(x, DType.Float64);
        var src = c.storage.As<double>();
        var (outer, n, inner) = Around(x.shape, d);
        var r = Tensor.Empty((int[])x.shape.Clone(), DType.Float64);
        var dst = r.storage.As<double>();
        var prefix = new double[n + 1];
        for (int o = 0; o < outer; o++)
        for (int i = 0; i < inner; i++)
        {
            prefix[0] = 1;
            for (int j = 0; j < n; j++) prefix[j + 1] = prefix[j] * src[(o * n + j) * inner + i];
            double suffix = 1;
            for (int j = n - 1; j >= 0; j--)
            {
                int at = (o * n + j) * inner + i;
                dst[at] = prefix[j] * suffix;
                suffix *= src[at];
            }
        }
        return CastIfNeeded(r, x.DType);
    }

    /// <summary>Max or min along a dimension: values (keepdim) and int64 indices of the first extreme. NaN wins.</summary>
    public static (Tensor values, Tensor indices) ExtremeDim(Tensor x, int d, bool max)
    {
        var dt = x.DType;
        if (dt is DType.Float16 or DType.BFloat16)
        {
            var (v, i) = ExtremeDim(Cast(x, DType.Float32), d, max);
            return (Cast(v, dt), i);
        }
        if (dt == DType.Bool)
        {
            var (v, i) = ExtremeDim(Cast(x, DType.UInt8), d, max);
            return (Cast(v, dt), i);
        }
        return dt switch
        {
            DType.Float32 => ExtremeT<float>(x, d, max),
            DType.Float64 => ExtremeT<double>(x, d, max),
            DType.Int64 => ExtremeT<long>(x, d, max),
            DType.Int32 => ExtremeT<int>(x, d, max),
            DType.Int8 => ExtremeT<sbyte>(x, d, max),
            DType.UInt8 => ExtremeT<byte>(x, d, max),
            DType.Int16 => ExtremeT<short>(x, d, max),
            DType.UInt16 => ExtremeT<ushort>(x, d, max),
            DType.UInt32 => ExtremeT<uint>(x, d, max),
            DType.UInt64 => ExtremeT<ulong>(x, d, max),
            _ => throw new DTypeException($"{(max ? "max" : "min")}: dtype {dt.TorchName()} is not supported"),
        };
    }

    static (Tensor, Tensor) ExtremeT<T>(Tensor x, int d, bool max) where T : unmanaged, INumber<T>
    {
        var (outer, n, inner) = Around(x.shape, d);
        if (n == 0) throw new ShapeMismatchException($"{(max ? "max" : "min")}: cannot reduce over dimension {d} of size 0 (shape {ShapeUtil.Format(x.shape)})");
        var src = x.ContiguousData<T>();
        var ks = KeepDimShape(x.shape, d);
        var v = Tensor.Empty(ks, x.DType);
        var ix = Tensor.Empty((int[])ks.Clone(), DType.Int64);
        var vd = v.storage.As<T>();
        var id = ix.storage.As<long>();
        for (int o = 0; o < outer; o++)
        for (int i = 0; i < inner; i++)
        {
            int b = o * n * inner + i;
            T best = src[b];
            int bi = 0;
            if (!T.IsNaN(best))
            {
                for (int j = 1; j < n; j++)
                {
                    T c = src[b + j * inner];
                    if (T.IsNaN(c)) { best = c; bi = j; break; }
                    if (max ? c > best : c < best) { best = c; bi = j; }
                }
            }
            vd[o * inner + i] = best;
            id[o * inner + i] = bi;
        }
        return (v, ix);
    }

    public static Tensor CumsumDim(Tensor x, int d)
    {
        var dt = x.DType;
        if (!dt.IsFloatingPoint() && dt is not (DType.Int64 or DType.UInt64)) return CumsumDim(Cast(x, DType.Int64), d);
        if (dt is DType.Float16 or DType.BFloat16) return Cast(CumsumDim(Cast(x, DType.Float32), d), dt);
        return dt switch
        {
            DType.Float32 => CumsumT<float>(x, d),
            DType.Float64 => CumsumT<double>(x, d),
            DType.Int64 => CumsumT<long>(x, d),
            DType.UInt64 => CumsumT<ulong>(x, d),
            _ => throw new DTypeException($"cumsum: dtype {dt.TorchName()} is not supported"),
        };
    }

    static Tensor CumsumT<T>(Tensor x, int d) where T : unmanaged, INumber<T>
    {
        var (outer, n, inner) = Around(x.shape, d);
        var src = x.ContiguousData<T>();
        var r = Tensor.Empty((int[])x.shape.Clone(), x.DType);
        var dst = r.storage.As<T>();
        for (int o = 0; o < outer; o++)
        for (int i = 0; i < inner; i++)
        {
            T acc = T.Zero;
            for (int j = 0; j < n; j++)
            {
                int at = (o * n + j) * inner + i;
                acc += src[at];
                dst[at] = acc;
            }
        }
        return r;
    }
}
