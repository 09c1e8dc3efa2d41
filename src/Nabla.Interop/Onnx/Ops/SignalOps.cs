using Nabla.Graph;
using static Nabla.Interop.Onnx.Ops.OpUtil;

namespace Nabla.Interop.Onnx.Ops;

/// <summary>DFT and the Hann, Hamming and Blackman windows, in double.</summary>
internal static class SignalOps
{
    public static void Register(OnnxOps r)
    {
        // w[n] = a0 - a1 cos(2πn/N') + a2 cos(4πn/N'), N' = size (periodic) or size - 1 (symmetric).
        r.Add("HannWindow", c => One(Window(c, 0.5, 0.5, 0)), since: 17);
        r.Add("HammingWindow", c => One(Window(c, 25.0 / 46, 21.0 / 46, 0)), since: 17);
        r.Add("BlackmanWindow", c => One(Window(c, 0.42, 0.5, 0.08)), since: 17);
        r.Add("DFT", c => One(Dft(c)), since: 17);
    }

    static Tensor Window(OpContext c, double a0, double a1, double a2)
    {
        long size = Longs(c.Input(0))[0];
        if (size < 0) throw Invalid(c, $"window size {size} is negative");
        bool periodic = c.Node.GetInt("periodic", 1) != 0;
        int type = (int)c.Node.GetInt("output_datatype", 1);
        var dtype = OnnxTypes.TryToDType(type) ?? throw Unsupported(c, $"output_datatype {OnnxTypes.Name(type)}");
        double denom = periodic ? size : size - 1;
        var w = new double[size];
        for (int n = 0; n < size; n++)
        {
            double t = denom > 0 ? 2 * Math.PI * n / denom : 0;
            w[n] = a0 - a1 * Math.Cos(t) + a2 * Math.Cos(2 * t);
        }
        return FromDoubles(w, [(int)size], dtype);
    }

    /// <summary>
    /// signal (..., n, 1 | 2) real or complex → (..., m, 2): X[k] = Σ x[j]·e^(∓2πi·jk/n) along the axis (1/n and + for
    /// the inverse); dft_length zero-pads or truncates n; onesided keeps the first n/2 + 1 frequencies. Inverse with
    /// onesided is irfft: the input holds frequencies 0..n/2 of a Hermitian spectrum, n = dft_length or 2·(len − 1),
    /// and the output is the real signal (..., n, 1).
    /// </summary>
    static Tensor Dft(OpContext c)
    {
        var x = c.Input(0);
        int rank = x.Dim;
        if (rank < 2 || x.Size(-1) is not (1 or 2)) throw Invalid(c, $"signal [{string.Join(", ", x.Shape)}] must end in a dimension of 1 (real) or 2 (complex)");
        long axisValue = c.Opset >= 20 ? (c.OptionalInput(2) is { } axisT ? Longs(axisT)[0] : -2) : c.Node.GetInt("axis", 1);
        if (axisValue < -rank || axisValue > rank - 2 || axisValue == -1) throw Invalid(c, $"axis {axisValue} is out of range for signal rank {rank}");
        int axis = (int)(axisValue < 0 ? axisValue + rank : axisValue);
        bool inverse = c.Node.GetInt("inverse", 0) != 0, onesided = c.Node.GetInt("onesided", 0) != 0;
        int n0 = x.Size(axis);
        int n = c.OptionalInput(1) is { } lenT && lenT.Shape.Aggregate(1, (p, d) => p * d) > 0 ? (int)Longs(lenT)[0] : n0;
        if (n <= 0) throw Invalid(c, $"dft_length {n} must be positive");
        bool complex = x.Size(-1) == 2;
        if (inverse && onesided) return InverseReal(c, x, axis, n0, c.OptionalInput(1) is { } lt && lt.Shape.Aggregate(1, (p, d) => p * d) > 0 ? (int)Longs(lt)[0] : 2 * (n0 - 1));
        var v = x.ToDoubleArray();
        int outer = x.Shape.Take(axis).Aggregate(1, (p, d) => p * d);
        int inner = x.Shape.Skip(axis + 1).SkipLast(1).Aggregate(1, (p, d) => p * d);
        int m = onesided ? n / 2 + 1 : n;
        int ch = complex ? 2 : 1;
        var o = new double[outer * m * inner * 2];
        double sign = inverse ? 1 : -1;
        for (int a = 0; a < outer; a++)
            for (int b = 0; b < inner; b++)
                for (int k = 0; k < m; k++)
                {
                    double re = 0, im = 0;
                    for (int j = 0; j < Math.Min(n, n0); j++)
                    {
                        int at = ((a * n0 + j) * inner + b) * ch;
                        double xr = v[at], xi = complex ? v[at + 1] : 0;
                        double angle = sign * 2 * Math.PI * ((long)j * k % n) / n;
                        double cos = Math.Cos(angle), sin = Math.Sin(angle);
                        re += xr * cos - xi * sin;
                        im += xr * sin + xi * cos;
                    }
                    if (inverse) { re /= n; im /= n; }
                    int to = ((a * m + k) * inner + b) * 2;
                    o[to] = re;
                    o[to + 1] = im;
                }
        var shape = x.Shape.ToArray();
        shape[axis] = m;
        shape[^1] = 2;
        return FromDoubles(o, shape, x.DType);
    }

    /// <summary>irfft along <paramref name="axis"/>: x[j] = (1/n) Re Σ_k X[k] e^(2πi·jk/n) with X[n − k] = conj(X[k]).</summary>
    static Tensor InverseReal(OpContext c, Tensor x, int axis, int n0, int n)
    {
        if (n <= 0) throw Invalid(c, $"dft_length {n} must be positive");
        bool complex = x.Size(-1) == 2;
        var v = x.ToDoubleArray();
        int outer = x.Shape.Take(axis).Aggregate(1, (p, d) => p * d);
        int inner = x.Shape.Skip(axis + 1).SkipLast(1).Aggregate(1, (p, d) => p * d);
        int ch = complex ? 2 : 1;
        var o = new double[outer * n * inner];
        for (int a = 0; a < outer; a++)
            for (int b = 0; b < inner; b++)
                for (int j = 0; j < n; j++)
                {
                    double sum = 0;
                    for (int k = 0; k < n; k++)
                    {
                        // bins above n/2 mirror the lower half, conjugated
                        int src = k <= n / 2 ? k : n - k;
                        if (src >= n0) continue;
                        int at = ((a * n0 + src) * inner + b) * ch;
                        double re = v[at], im = complex ? v[at + 1] : 0;
                        if (k > n / 2) im = -im;
                        double angle = 2 * Math.PI * ((long)j * k % n) / n;
                        sum += re * Math.Cos(angle) - im * Math.Sin(angle);
                    }
                    o[(a * n + j) * inner + b] = sum / n;
                }
        var shape = x.Shape.ToArray();
        shape[axis] = n;
        shape[^1] = 1;
        return FromDoubles(o, shape, x.DType);
    }
}
