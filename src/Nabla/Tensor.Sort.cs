namespace Nabla;

public sealed partial class Tensor
{
    /// <summary>Stable sort along a dimension: values and their original int64 indices. NaN sorts as the largest.</summary>
    public (Tensor values, Tensor indices) Sort(int dim = -1, bool descending = false)
    {
        int d = NormalizeDim(dim, shape.Length, "sort");
        var idx = SortIndices(d, descending, shape.Length == 0 ? 1 : shape[d]);
        return (Gather(d, idx), idx);
    }

    public Tensor Argsort(int dim = -1, bool descending = false) => Sort(dim, descending).indices;

    /// <summary>The k largest (or smallest) elements along a dimension, sorted, with their indices.</summary>
    public (Tensor values, Tensor indices) Topk(int k, int dim = -1, bool largest = true, bool sorted = true)
    {
        int d = NormalizeDim(dim, shape.Length, "topk");
        int n = shape.Length == 0 ? 1 : shape[d];
        if (k < 0 || k > n) throw new IndexOutOfBoundsException($"topk: k ({k}) is out of range for dimension {d} of size {n} (shape {ShapeUtil.Format(shape)})");
        var idx = SortIndices(d, largest, k);
        return (Gather(d, idx), idx);
    }

    Tensor SortIndices(int d, bool descending, int keep)
    {
        if (shape.Length == 0) return Zeros([], DType.Int64);
        if (!DType.IsIntegral())
        {
            Comparison<double> up = (a, b) => Key(a).CompareTo(Key(b));
            return SortIndicesBy(ToDoubleArray(), d, keep, descending ? (a, b) => up(b, a) : up);
        }
        // Integer keys are compared exactly (a double would tie int64/uint64 neighbours above 2^53); uint64 arrives
        // reinterpreted as int64, so those compare unsigned.
        var bits = Cpu.Cast(this, DType.Int64).storage.As<long>();
        Comparison<long> exact = DType == DType.UInt64 ? (a, b) => unchecked((ulong)a).CompareTo(unchecked((ulong)b)) : (a, b) => a.CompareTo(b);
        return SortIndicesBy(bits, d, keep, descending ? (a, b) => exact(b, a) : exact);

        static double Key(double v) => double.IsNaN(v) ? double.PositiveInfinity : v;
    }

    /// <summary>The first <paramref name="keep"/> indices along <paramref name="d"/> of a stable sort of <paramref name="src"/>
    /// (this tensor's contiguous values) by <paramref name="compare"/>; equal keys keep their index order.</summary>
    Tensor SortIndicesBy<T>(T[] src, int d, int keep, Comparison<T> compare)
    {
        var (outer, n, inner) = Cpu.Around(shape, d);
        var os = (int[])shape.Clone();
        os[d] = keep;
        var r = Empty(os, DType.Int64);
        var dst = r.storage.As<long>();
        var order = new int[n];
        var keys = new T[n];
        Comparison<int> byKey = (p, q) => { int c = compare(keys[p], keys[q]); return c != 0 ? c : p.CompareTo(q); };
        for (int o = 0; o < outer; o++)
        for (int i = 0; i < inner; i++)
        {
            for (int j = 0; j < n; j++) { order[j] = j; keys[j] = src[(o * n + j) * inner + i]; }
            Array.Sort(order, byKey);
            for (int j = 0; j < keep; j++) dst[(o * keep + j) * inner + i] = order[j];
        }
        return r;
    }
}
