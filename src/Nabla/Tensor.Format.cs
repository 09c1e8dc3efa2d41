using System.Globalization;
using System.Text;

namespace Nabla;

public sealed partial class Tensor
{
    /// <summary>
    /// Prints like PyTorch: <c>tensor([[1.0000, 2.5000], ...])</c>. Floats take 4 decimals, or a trailing point
    /// when every value is integral, or scientific notation when the magnitudes span more than 1000x or leave
    /// [1e-4, 1e8). Tensors over 1000 elements are summarized with "...". Non-default dtypes and autograd
    /// state are appended.
    /// </summary>
    public override string ToString()
    {
        var values = ToDoubleArray();
        bool summarize = values.Length > 1000;
        // NOTE: as in PyTorch, the format and the column width come from the printed values only.
        var shownAt = summarize ? SummarizedIndices() : null;
        var shown = shownAt is null ? values : Array.ConvertAll(shownAt, i => values[i]);
        var fmt = ChooseFormat(shown);
        // Integers print from their exact 64 bits: a double would round int64/uint64 values above 2^53.
        Func<int, string> cell = DType.IsIntegral() ? IntegerCells() : i => fmt(values[i]);
        var sb = new StringBuilder("tensor(");
        if (shape.Length == 0) sb.Append(cell(0));
        else
        {
            int width = 0;
            // NOTE: nan and inf do not widen the columns (PyTorch measures the finite values only).
            foreach (var i in shownAt ?? Enumerable.Range(0, values.Length)) if (double.IsFinite(values[i])) width = Math.Max(width, cell(i).Length);
            WriteDim(sb, cell, 0, 0, width, summarize, 7);
        }
        if (DType is not (DType.Float32 or DType.Int64 or DType.Bool)) sb.Append(", dtype=").Append(DType.TorchName());
        if (gradFn is not null) sb.Append(", grad_fn=<").Append(GradFnName(gradFn.Op)).Append('>');
        else if (requiresGrad) sb.Append(", requires_grad=True");
        sb.Append(')');
        return sb.ToString();
    }

    static string GradFnName(string op) => string.Concat(op.Split('_').Select(p => p.Length == 0 ? p : char.ToUpperInvariant(p[0]) + p[1..])) + "Backward";

    /// <summary>Exact decimal text of each element of an integer tensor, by flat row-major index.</summary>
    Func<int, string> IntegerCells()
    {
        var (st, off, _) = ContiguousElements();   // a copy, if any, is left to the GC: the cells read it later
        var inv = CultureInfo.InvariantCulture;
        if (DType == DType.UInt64) return i => unchecked((ulong)Cpu.ReadAsInt64Bits(st, off + i)).ToString(inv);
        return i => Cpu.ReadAsInt64Bits(st, off + i).ToString(inv);
    }

    void WriteDim(StringBuilder sb, Func<int, string> cell, int dim, int start, int width, bool summarize, int indent)
    {
        int n = shape[dim];
        int stride = 1;
        for (int i = dim + 1; i < shape.Length; i++) stride *= shape[i];
        sb.Append('[');
        for (int i = 0; i < n; i++)
        {
            if (summarize && n > 6 && i == 3)
            {
                sb.Append(dim == shape.Length - 1 ? " ..., " : "...,\n" + new string('\n', shape.Length - dim - 2) + new string(' ', indent + dim + 1));
                i = n - 3;
            }
            if (dim == shape.Length - 1) sb.Append(cell(start + i).PadLeft(width));
            else WriteDim(sb, cell, dim + 1, start + i * stride, width, summarize, indent);
            if (i < n - 1)
            {
                if (dim == shape.Length - 1) sb.Append(", ");
                else sb.Append(',').Append('\n', shape.Length - dim - 1).Append(' ', indent + dim + 1);
            }
        }
        sb.Append(']');
    }

    /// <summary>The flat indices of the values a summarized print shows: the first and last 3 along every dimension longer than 6.</summary>
    int[] SummarizedIndices()
    {
        var shown = new List<int>();
        void Walk(int dim, int start)
        {
            int n = shape[dim], stride = 1;
            for (int i = dim + 1; i < shape.Length; i++) stride *= shape[i];
            for (int i = 0; i < n; i++)
            {
                if (n > 6 && i == 3) i = n - 3;
                if (dim == shape.Length - 1) shown.Add(start + i);
                else Walk(dim + 1, start + i * stride);
            }
        }
        if (shape.Length > 0) Walk(0, 0);
        return shown.ToArray();
    }

    Func<double, string> ChooseFormat(double[] values)
    {
        var inv = CultureInfo.InvariantCulture;
        if (DType == DType.Bool) return v => v != 0 ? "True" : "False";
        if (!DType.IsFloatingPoint()) return v => ((long)v).ToString(inv);
        var finite = values.Where(double.IsFinite).ToArray();
        static string Special(double v) => double.IsNaN(v) ? "nan" : v > 0 ? "inf" : "-inf";
        if (finite.Length == 0) return v => double.IsFinite(v) ? v.ToString("0.", inv) : Special(v);
        bool integral = finite.All(v => v == Math.Floor(v));
        var nonzero = finite.Where(v => v != 0).Select(Math.Abs).ToArray();
        double max = nonzero.Length > 0 ? nonzero.Max() : 0, min = nonzero.Length > 0 ? nonzero.Min() : 0;
        if (integral)
        {
            if (max > 1e8 || (min > 0 && max / min > 1000)) return v => double.IsFinite(v) ? Sci(v) : Special(v);
            return v => double.IsFinite(v) ? v.ToString("0", inv) + "." : Special(v);
        }
        if (nonzero.Length > 0 && (max / min > 1000 || max > 1e8 || min < 1e-4))
            return v => double.IsFinite(v) ? Sci(v) : Special(v);
        return v => double.IsFinite(v) ? v.ToString("0.0000", inv) : Special(v);

        static string Sci(double v)
        {
            var s = v.ToString("0.0000e+00", CultureInfo.InvariantCulture);
            return s;
        }
    }
}
