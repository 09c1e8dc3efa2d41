namespace Nabla;

public sealed partial class Tensor
{
    /// <summary>Seeds the default generator (torch.manual_seed).</summary>
    public static void ManualSeed(ulong seed) => Generator.Default.ManualSeed(seed);

    public static Tensor Zeros(int[] shape, DType dtype = DType.Float32) => ZerosRaw((int[])shape.Clone(), dtype);
    public static Tensor Zeros(params int[] shape) => Zeros(shape, DType.Float32);
    public static Tensor Ones(int[] shape, DType dtype = DType.Float32) => Full(shape, 1.0, dtype);
    public static Tensor Ones(params int[] shape) => Ones(shape, DType.Float32);

    public static Tensor Full(int[] shape, double value, DType dtype = DType.Float32)
    {
        var t = Empty((int[])shape.Clone(), dtype);
        t.FillRaw(value);
        return t;
    }

    public static Tensor ZerosLike(Tensor t) => Zeros(t.shape, t.DType);
    public static Tensor OnesLike(Tensor t) => Ones(t.shape, t.DType);
    public static Tensor FullLike(Tensor t, double value) => Full(t.shape, value, t.DType);
    public static Tensor RandLike(Tensor t, Generator? g = null) => Rand(t.shape, t.DType, g);
    public static Tensor RandnLike(Tensor t, Generator? g = null) => Randn(t.shape, t.DType, g);

    /// <summary>A zero-dimensional tensor holding one value.</summary>
    public static Tensor Scalar(double value, DType dtype = DType.Float32) => Full([], value, dtype);

    /// <summary>A tensor over a copy of <paramref name="data"/>; the shape defaults to 1-D.</summary>
    public static Tensor FromArray<T>(T[] data, params int[] shape)
    {
        var s = shape.Length == 0 ? [data.Length] : (int[])shape.Clone();
        if (ShapeUtil.Numel(s) != data.Length)
            throw new ShapeMismatchException($"from_array: {data.Length} values do not fill shape {ShapeUtil.Format(s)} ({ShapeUtil.Numel(s)} elements)");
        return new Tensor(new Storage((T[])data.Clone(), DTypes.Of<T>()), s);
    }

    /// <summary>A tensor over a copy of <paramref name="data"/> (copied once); the shape defaults to 1-D.</summary>
    public static Tensor FromSpan<T>(ReadOnlySpan<T> data, params int[] shape) => AsTensor(data.ToArray(), shape);

    /// <summary>
    /// A tensor over <paramref name="data"/> itself, without a copy (torch.as_tensor / torch.from_numpy on a NumPy
    /// array): writes through either one show in the other, and the array is never handed to the buffer cache, so
    /// disposing the tensor leaves it valid for its owner. The shape defaults to 1-D. Model loaders use it for arrays
    /// they have just made (an ONNX initializer's values, folded weights), where a copy would only cost a second pass over
    /// tens of megabytes of fresh memory.
    /// </summary>
    public static Tensor AsTensor<T>(T[] data, params int[] shape)
    {
        var s = shape.Length == 0 ? [data.Length] : (int[])shape.Clone();
        if (ShapeUtil.Numel(s) != data.Length)
            throw new ShapeMismatchException($"as_tensor: {data.Length} values do not fill shape {ShapeUtil.Format(s)} ({ShapeUtil.Numel(s)} elements)");
        return new Tensor(new Storage(data, DTypes.Of<T>()), s);
    }

    /// <summary>From a 2-D C# array (rows × columns).</summary>
    public static Tensor FromArray<T>(T[,] data)
    {
        int r = data.GetLength(0), c = data.GetLength(1);
        var flat = new T[r * c];
        for (int i = 0; i < r; i++) for (int j = 0; j < c; j++) flat[i * c + j] = data[i, j];
        return new Tensor(new Storage(flat, DTypes.Of<T>()), [r, c]);
    }

    /// <summary>Values from <paramref name="start"/> up to (not including) <paramref name="end"/>. Integral arguments give int64, as in PyTorch.</summary>
    public static Tensor Arange(double start, double end, double step = 1, DType? dtype = null)
    {
        if (step == 0) throw new NablaException("arange: step must be nonzero");
        if ((end - start) / step < 0) throw new NablaException($"arange: upper bound {end} and lower bound {start} inconsistent with step sign {step}");
        int n = (int)Math.Ceiling((end - start) / step);
        bool integral = start == Math.Floor(start) && end == Math.Floor(end) && step == Math.Floor(step);
        var dt = dtype ?? (integral ? DType.Int64 : DType.Float32);
        var t = Empty([n], dt);
        for (int i = 0; i < n; i++) Cpu.WriteFromDouble(t.storage, i, start + i * step);
        return t;
    }

    public static Tensor Arange(int end) => Arange(0, end);

    public static Tensor Linspace(double start, double end, int steps, DType dtype = DType.Float32)
    {
        if (steps < 0) throw new NablaException($"linspace: number of steps must be non-negative, got {steps}");
        var t = Empty([steps], dtype);
        double step = steps > 1 ? (end - start) / (steps - 1) : 0;
        // NOTE: the second half counts back from the end, as PyTorch does, so the last value is exactly `end`.
        // A single step is `start`, as torch.linspace gives.
        int half = steps == 1 ? 1 : steps / 2;
        for (int i = 0; i < steps; i++)
            Cpu.WriteFromDouble(t.storage, i, i < half ? start + step * i : end - step * (steps - 1 - i));
        return t;
    }

    public static Tensor Eye(int n, int? m = null, DType dtype = DType.Float32)
    {
        int cols = m ?? n;
        var t = Zeros([n, cols], dtype);
        for (int i = 0; i < Math.Min(n, cols); i++) Cpu.WriteFromDouble(t.storage, i * cols + i, 1);
        return t;
    }

    /// <summary>Uniform samples in [0, 1).</summary>
    public static Tensor Rand(int[] shape, DType dtype = DType.Float32, Generator? generator = null)
    {
        var g = generator ?? Generator.Default;
        var t = Empty((int[])shape.Clone(), dtype);
        int n = t.NumElements;
        if (dtype == DType.Float32) { var d = t.storage.As<float>(); for (int i = 0; i < n; i++) d[i] = g.NextFloat(); }
        else for (int i = 0; i < n; i++) Cpu.WriteFromDouble(t.storage, i, g.NextDouble());
        return t;
    }

    public static Tensor Rand(params int[] shape) => Rand(shape, DType.Float32);

    /// <summary>Standard normal samples.</summary>
    public static Tensor Randn(int[] shape, DType dtype = DType.Float32, Generator? generator = null) => Normal(shape, 0, 1, dtype, generator);

    public static Tensor Randn(params int[] shape) => Randn(shape, DType.Float32);

    public static Tensor Normal(int[] shape, double mean, double std, DType dtype = DType.Float32, Generator? generator = null)
    {
        if (!dtype.IsFloatingPoint()) throw new DTypeException($"normal: expects a floating point dtype, got {dtype.TorchName()}");
        var g = generator ?? Generator.Default;
        var t = Empty((int[])shape.Clone(), dtype);
        int n = t.NumElements;
        for (int i = 0; i < n; i++) Cpu.WriteFromDouble(t.storage, i, mean + std * g.NextNormal());
        return t;
    }

    /// <summary>Uniform integers in [low, high), int64 by default.</summary>
    public static Tensor Randint(long low, long high, int[] shape, DType dtype = DType.Int64, Generator? generator = null)
    {
        var g = generator ?? Generator.Default;
        var t = Empty((int[])shape.Clone(), dtype);
        int n = t.NumElements;
        for (int i = 0; i < n; i++) Cpu.WriteFromDouble(t.storage, i, g.NextLong(low, high));
        return t;
    }

    /// <summary>Draws 1 with probability p (each element of this tensor) and 0 otherwise.</summary>
    public Tensor Bernoulli(Generator? generator = null)
    {
        var g = generator ?? Generator.Default;
        var p = ToDoubleArray();
        var t = Empty((int[])shape.Clone(), DType.IsFloatingPoint() ? DType : DType.Float32);
        for (int i = 0; i < p.Length; i++)
        {
            if (p[i] < 0 || p[i] > 1 || double.IsNaN(p[i]))
                throw new NablaException($"bernoulli: probabilities must be in [0, 1], got {p[i]} at flat index {i}");
            Cpu.WriteFromDouble(t.storage, i, g.NextDouble() < p[i] ? 1 : 0);
        }
        return t;
    }

    /// <summary>A float32 tensor of independent draws: 1 with probability p (as a float32 holds it), 0 otherwise. The same
    /// draws and thresholds as <c>Full(shape, p).Bernoulli()</c>, written without the probability tensor.</summary>
    public static Tensor Bernoulli(int[] shape, double p, Generator? generator = null)
    {
        var t = Empty((int[])shape.Clone(), DType.Float32);
        var m = t.storage.As<float>();
        int n = t.NumElements;
        double keep = (float)p;
        if (n > 0 && (keep < 0 || keep > 1 || double.IsNaN(keep)))
            throw new NablaException($"bernoulli: probabilities must be in [0, 1], got {keep} at flat index 0");
        var g = generator ?? Generator.Default;
        for (int i = 0; i < n; i++) m[i] = g.NextDouble() < keep ? 1f : 0f;
        return t;
    }

    /// <summary>All elements converted to double, in row-major order.</summary>
    public double[] ToDoubleArray()
    {
        if (DType == DType.Float64) return ToArray<double>();
        var c = Cpu.Cast(this, DType.Float64);
        return c.storage.As<double>();
    }

    /// <summary>All elements converted to float, in row-major order.</summary>
    public float[] ToFloatArray()
    {
        if (DType == DType.Float32) return ToArray<float>();
        var c = Cpu.Cast(this, DType.Float32);
        return c.storage.As<float>();
    }

    internal void FillRaw(double value)
    {
        int n = storage.Length;
        switch (DType)
        {
            case DType.Float32: Array.Fill(storage.As<float>(), (float)value); break;
            case DType.Float64: Array.Fill(storage.As<double>(), value); break;
            case DType.Int64: Array.Fill(storage.As<long>(), Nabla.Scalar.FromDouble<long>(value)); break;
            case DType.Int32: Array.Fill(storage.As<int>(), Nabla.Scalar.FromDouble<int>(value)); break;
            default: for (int i = 0; i < n; i++) Cpu.WriteFromDouble(storage, i, value); break;
        }
    }

    /// <summary>Converts to another dtype (a copy unless the dtype already matches). Differentiable between float types.</summary>
    public Tensor To(DType dtype)
    {
        if (dtype == DType) return this;
        var r = Cpu.Cast(this, dtype);
        if (!dtype.IsFloatingPoint()) return r;
        var from = DType;
        return Record(r, "to", [this], g => [g.To(from)]);
    }

    public Tensor Float() => To(DType.Float32);
    public Tensor Double() => To(DType.Float64);
    public Tensor Long() => To(DType.Int64);
}
