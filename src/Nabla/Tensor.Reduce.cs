namespace Nabla;

public sealed partial class Tensor
{
    int[] NormalizeDims(int[] dims, string op)
    {
        var r = new int[dims.Length];
        for (int i = 0; i < dims.Length; i++) r[i] = NormalizeDim(dims[i], shape.Length, op);
        if (r.Distinct().Count() != r.Length) throw new DimensionOutOfRangeException($"{op}: dimension repeats in ({string.Join(", ", dims)})");
        return r;
    }

    int[] RemoveDims(int[] keepShape, int[] dims)
    {
        var s = new List<int>();
        for (int i = 0; i < keepShape.Length; i++) if (!dims.Contains(i)) s.Add(keepShape[i]);
        return s.ToArray();
    }

    /// <summary>Sum of all elements (a 0-d tensor).</summary>
    public Tensor Sum() => Reshape(-1).Sum([0], false).Reshape([]);

    public Tensor Sum(int dim, bool keepDim = false) => Sum([dim], keepDim);

    public Tensor Sum(int[] dims, bool keepDim = false)
    {
        if (shape.Length == 0) return dims.Length == 0 || dims.All(d => d is 0 or -1) ? SumScalarCopy() : throw new DimensionOutOfRangeException($"sum: dimension out of range for a 0-d tensor");
        var ds = NormalizeDims(dims, "sum");
        var r = this.Detach();
        foreach (var d in ds.OrderBy(x => x)) r = Cpu.SumDim(r, d);
        var keep = r.shape;
        if (!keepDim) r = new Tensor(r.storage, RemoveDims(keep, ds));
        var inShape = shape;
        return Record(r, "sum", [this], g => [g.Reshape(keep).Expand(inShape)]);
    }

    Tensor SumScalarCopy()
    {
        var r = Cpu.SumDim(Reshape(1).Detach(), 0).Detach();
        r = new Tensor(r.storage, []);
        return Record(r, "sum", [this], g => [g]);
    }

    public Tensor Mean() => FloatInput().Sum().Div(NumElements);

    public Tensor Mean(int dim, bool keepDim = false) => Mean([dim], keepDim);

    public Tensor Mean(int[] dims, bool keepDim = false)
    {
        var x = FloatInput();
        int n = 1;
        foreach (var d in NormalizeDims(dims, "mean")) n *= shape[d];
        return x.Sum(dims, keepDim).Div(n);
    }

    public Tensor Prod(int dim, bool keepDim = false)
    {
        int d = NormalizeDim(dim, shape.Length, "prod");
        var r = Cpu.ProdDim(this, d);
        var keep = r.shape;
        if (!keepDim) r = new Tensor(r.storage, RemoveDims(keep, [d]));
        var x = this;
        return Record(r, "prod", [this], g => [g.Reshape(keep).Mul(Cpu.ProdOthers(x.Detach(), d))], x);
    }

    public Tensor Prod() => Reshape(-1).Prod(0);

    /// <summary>Maximum along a dimension with the index of the first maximum (torch.max(x, dim)).</summary>
    public (Tensor values, Tensor indices) Max(int dim, bool keepDim = false) => Extreme(dim, keepDim, true);

    public (Tensor values, Tensor indices) Min(int dim, bool keepDim = false) => Extreme(dim, keepDim, false);

    (Tensor, Tensor) Extreme(int dim, bool keepDim, bool max)
    {
        string op = max ? "max" : "min";
        int d = NormalizeDim(dim, shape.Length, op);
        var x = shape.Length == 0 ? Reshape(1) : this;
        var (v, i) = Cpu.ExtremeDim(x.Detach(), d, max);
        var keep = v.shape;
        var keepIdx = i;
        if (!keepDim && shape.Length > 0)
        {
            v = new Tensor(v.storage, RemoveDims(keep, [d]));
            i = new Tensor(i.storage, RemoveDims(keep, [d]));
        }
        var inShape = x.shape;
        v = Record(v, op, [x], g => [Zeros(inShape, g.DType).ScatterAdd(d, keepIdx, g.Reshape(keep))], keepIdx);
        return (shape.Length == 0 ? v.Reshape([]) : v, shape.Length == 0 ? i.Reshape([]) : i);
    }

    /// <summary>The largest element (0-d). Its gradient is shared evenly by all the maxima, as in PyTorch.</summary>
    public Tensor Max() => ExtremeAll(true);

    public Tensor Min() => ExtremeAll(false);

    Tensor ExtremeAll(bool max)
    {
        var flat = Reshape(-1);
        var m = max ? flat.Max(0).values : flat.Min(0).values;
        if (!m.requiresGrad) return m;
        // m + sum((x - m)·tie) / count: the same value (each term is exactly 0), gradient tie / count.
        var md = m.Detach();
        var tie = flat.Detach().Eq(md).To(DType);
        return md.Add(flat.Sub(md).Mul(tie).Sum().Div(tie.Sum()));
    }

    public Tensor Argmax(int dim, bool keepDim = false) => Max(dim, keepDim).indices;
    public Tensor Argmin(int dim, bool keepDim = false) => Min(dim, keepDim).indices;
    public Tensor Argmax() => Reshape(-1).Argmax(0);
    public Tensor Argmin() => Reshape(-1).Argmin(0);

    /// <summary>Variance with Bessel's correction by default (correction = 1), as torch.var.</summary>
    public Tensor Var(int[] dims, int correction = 1, bool keepDim = false)
    {
        var x = FloatInput();
        int n = 1;
        foreach (var d in NormalizeDims(dims, "var")) n *= shape[d];
        var centered = x.Sub(x.Mean(dims, true));
        return centered.Mul(centered).Sum(dims, keepDim).Div(Math.Max(n - correction, 0));
    }

    public Tensor Var(int dim, int correction = 1, bool keepDim = false) => Var([dim], correction, keepDim);
    // NOTE: the whole-tensor overloads take int? so that x.Var(1) binds to the dim overload, as torch's x.var(1) does.
    public Tensor Var(int? correction = null) => Reshape(-1).Var([0], correction ?? 1);
    public Tensor Std(int[] dims, int correction = 1, bool keepDim = false) => Var(dims, correction, keepDim).Sqrt();
    public Tensor Std(int dim, int correction = 1, bool keepDim = false) => Var([dim], correction, keepDim).Sqrt();
    public Tensor Std(int? correction = null) => Var(correction).Sqrt();

    /// <summary>log(sum(exp(x))) along a dimension, computed stably around the maximum.</summary>
    public Tensor LogSumExp(int dim, bool keepDim = false)
    {
        var x = FloatInput();
        var m = x.Max(dim, true).values.Detach();
        // NOTE: an all -inf slice keeps -inf instead of NaN.
        m = Where(m.Abs().Eq(double.PositiveInfinity), ZerosLike(m), m);
        var r = x.Sub(m).Exp().Sum(dim, true).Log().Add(m);
        return keepDim ? r : r.Squeeze(NormalizeDim(dim, shape.Length, "logsumexp"));
    }

    /// <summary>The p-norm over all elements (p = 2 by default) or over a dimension.</summary>
    public Tensor Norm(double p = 2)
    {
        var x = FloatInput();
        if (p == 2) return Root(x.Mul(x).Sum(), 2);
        if (p == 1) return x.Abs().Sum();
        if (double.IsPositiveInfinity(p)) return x.Abs().Max();
        return Root(x.Abs().Pow(p).Sum(), p);
    }

    public Tensor Norm(double p, int dim, bool keepDim = false)
    {
        var x = FloatInput();
        if (p == 2) return Root(x.Mul(x).Sum(dim, keepDim), 2);
        if (p == 1) return x.Abs().Sum(dim, keepDim);
        if (double.IsPositiveInfinity(p)) return x.Abs().Max(dim, keepDim).values;
        return Root(x.Abs().Pow(p).Sum(dim, keepDim), p);
    }

    // s^(1/p) whose gradient is 0 (not NaN) where s == 0: PyTorch's norm gradient at a zero vector.
    static Tensor Root(Tensor s, double p)
    {
        var zero = s.Eq(0.0);
        var safe = Where(zero, OnesLike(s), s);
        var r = p == 2 ? safe.Sqrt() : safe.Pow(1 / p);
        return Where(zero, ZerosLike(s), r);
    }

    public Tensor Cumsum(int dim)
    {
        int d = NormalizeDim(dim, shape.Length, "cumsum");
        var r = Cpu.CumsumDim(shape.Length == 0 ? Reshape(1) : this, d);
        if (shape.Length == 0) r = new Tensor(r.storage, []);
        return Record(r, "cumsum", [this], g => [g.Flip(d).Cumsum(d).Flip(d)]);
    }

    /// <summary>True if every element is nonzero (a 0-d bool tensor).</summary>
    public Tensor All() => Scalar(AsBool().ToArray<bool>().All(b => b) ? 1 : 0, DType.Bool);

    public Tensor Any() => Scalar(AsBool().ToArray<bool>().Any(b => b) ? 1 : 0, DType.Bool);

    public Tensor All(int dim, bool keepDim = false) => AsBool().To(DType.Int64).Min(dim, keepDim).values.Ne(0.0);

    public Tensor Any(int dim, bool keepDim = false) => AsBool().To(DType.Int64).Max(dim, keepDim).values.Ne(0.0);
}
