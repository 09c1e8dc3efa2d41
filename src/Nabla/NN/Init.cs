namespace Nabla.NN;

/// <summary>Weight initializers (torch.nn.init). Each fills the tensor in place, without recording autograd, and returns it.</summary>
public static class Init
{
    static Tensor Set(Tensor t, Tensor values)
    {
        using (GradMode.NoGrad()) t.Copy_(values);
        return t;
    }

    public static (int fanIn, int fanOut) Fans(Tensor t)
    {
        if (t.Dim < 2) throw new ShapeMismatchException($"init: fan in and fan out cannot be computed for a tensor with fewer than 2 dimensions (shape {ShapeUtil.Format(t.shape)})");
        int receptive = 1;
        for (int i = 2; i < t.Dim; i++) receptive *= t.shape[i];
        return (t.shape[1] * receptive, t.shape[0] * receptive);
    }

    public static double Gain(string nonlinearity, double param = 0.01) => nonlinearity switch
    {
        "linear" or "conv1d" or "conv2d" or "sigmoid" => 1,
        "tanh" => 5.0 / 3,
        "relu" => Math.Sqrt(2),
        "leaky_relu" => Math.Sqrt(2.0 / (1 + param * param)),
        "selu" => 0.75,
        _ => throw new NablaException($"init: unsupported nonlinearity '{nonlinearity}'"),
    };

    /// <summary>
    /// Uniform samples in [a, b): u·(b − a) + a for u from <see cref="Tensor.Rand(int[], DType, Generator?)"/>. Float32
    /// is computed in one pass, the same float operations (one product and one sum, each rounded) that Rand, Mul and Add
    /// would apply, so the values are bit for bit those of the three-op form; other dtypes take that form. The one pass
    /// matters at start-up: Mul and Add over float instantiate generic kernels that ReadyToRun cannot precompile
    /// (docs/architecture.md, "Start-up"), and building a model initializes every layer this way.
    /// </summary>
    public static Tensor Uniform(Tensor t, double a = 0, double b = 1, Generator? g = null)
    {
        if (t.DType != DType.Float32) return Set(t, Tensor.Rand(t.shape, t.DType, g).Mul(b - a).Add(a));
        var generator = g ?? Generator.Default;
        var values = Tensor.Empty((int[])t.shape.Clone(), DType.Float32);
        var d = values.storage.As<float>();
        float scale = (float)(b - a), shift = (float)a;
        for (int i = 0, n = values.NumElements; i < n; i++)
        {
            float scaled = (float)(generator.NextFloat() * scale);   // each operation rounded to float, as Mul then Add do
            d[i] = (float)(scaled + shift);
        }
        return Set(t, values);
    }

    public static Tensor Normal(Tensor t, double mean = 0, double std = 1, Generator? g = null) =>
        Set(t, Tensor.Normal(t.shape, mean, std, t.DType, g));

    public static Tensor Constant(Tensor t, double value) => Set(t, Tensor.Full(t.shape, value, t.DType));
    public static Tensor Zeros(Tensor t) => Constant(t, 0);
    public static Tensor Ones(Tensor t) => Constant(t, 1);

    public static Tensor XavierUniform(Tensor t, double gain = 1, Generator? g = null)
    {
        var (fi, fo) = Fans(t);
        double a = gain * Math.Sqrt(6.0 / (fi + fo));
        return Uniform(t, -a, a, g);
    }

    public static Tensor XavierNormal(Tensor t, double gain = 1, Generator? g = null)
    {
        var (fi, fo) = Fans(t);
        return Normal(t, 0, gain * Math.Sqrt(2.0 / (fi + fo)), g);
    }

    /// <summary>He uniform: bound = gain·sqrt(3/fan). PyTorch's layers use a = sqrt(5), giving bound 1/sqrt(fan_in).</summary>
    public static Tensor KaimingUniform(Tensor t, double a = 0, string mode = "fan_in", string nonlinearity = "leaky_relu", Generator? g = null)
    {
        var (fi, fo) = Fans(t);
        int fan = mode == "fan_in" ? fi : fo;
        double bound = Gain(nonlinearity, a) * Math.Sqrt(3.0 / fan);
        return Uniform(t, -bound, bound, g);
    }

    public static Tensor KaimingNormal(Tensor t, double a = 0, string mode = "fan_in", string nonlinearity = "leaky_relu", Generator? g = null)
    {
        var (fi, fo) = Fans(t);
        int fan = mode == "fan_in" ? fi : fo;
        return Normal(t, 0, Gain(nonlinearity, a) / Math.Sqrt(fan), g);
    }

    /// <summary>A (semi-)orthogonal matrix from the QR decomposition of a normal sample (Gram–Schmidt, sign-corrected).</summary>
    public static Tensor Orthogonal(Tensor t, double gain = 1, Generator? g = null)
    {
        if (t.Dim < 2) throw new ShapeMismatchException($"orthogonal: only tensors with 2 or more dimensions are supported, got {ShapeUtil.Format(t.shape)}");
        int rows = t.shape[0], cols = t.NumElements / rows;
        bool transpose = rows < cols;
        int n = transpose ? cols : rows, m = transpose ? rows : cols;   // n ≥ m: orthonormal columns of an n×m matrix
        var a = Tensor.Randn([n, m], DType.Float64, g).ToArray<double>();
        for (int j = 0; j < m; j++)
        {
            for (int k = 0; k < j; k++)
            {
                double dot = 0;
                for (int i = 0; i < n; i++) dot += a[i * m + j] * a[i * m + k];
                for (int i = 0; i < n; i++) a[i * m + j] -= dot * a[i * m + k];
            }
            double norm = 0;
            for (int i = 0; i < n; i++) norm += a[i * m + j] * a[i * m + j];
            norm = Math.Sqrt(norm);
            for (int i = 0; i < n; i++) a[i * m + j] /= norm;
        }
        var q = Tensor.FromArray(a, n, m);
        if (transpose) q = q.T.Contiguous();
        return Set(t, q.Mul(gain).Reshape(t.shape).To(t.DType));
    }
}
