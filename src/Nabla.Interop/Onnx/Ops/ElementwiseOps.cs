using Nabla.Graph;
using static Nabla.Interop.Onnx.Ops.OpUtil;

namespace Nabla.Interop.Onnx.Ops;

/// <summary>Arithmetic, comparison, logic and unary math, all with numpy broadcasting.</summary>
internal static class ElementwiseOps
{
    public static void Register(OnnxOps r)
    {
        r.Add("Add", c => One(c.Input(0).Add(c.Input(1))));
        r.Add("Sub", c => One(c.Input(0).Sub(c.Input(1))));
        r.Add("Mul", c => One(c.Input(0).Mul(c.Input(1))));
        r.Add("Div", c =>
        {
            Tensor a = c.Input(0), b = c.Input(1);
            if (a.DType.IsFloatingPoint()) return One(a.Div(b));
            // Integers: exact (no detour through double), truncating toward zero; x / 0 gives 0.
            return One(IntegerMap2(a, b, (x, y) => y == 0 ? 0 : y == -1 ? unchecked(-x) : x / y, (x, y) => y == 0 ? 0 : x / y));
        });
        r.Add("Pow", c =>
        {
            Tensor a = c.Input(0), b = c.Input(1);
            if (a.DType.IsFloatingPoint() && a.DType == b.DType) return One(a.Pow(b));
            return One(Map2(a, b, Math.Pow, a.DType));
        });
        r.Add("Mod", c =>
        {
            Tensor a = c.Input(0), b = c.Input(1);
            bool fmod = c.Node.GetInt("fmod", 0) != 0;
            if (!fmod && a.DType.IsFloatingPoint()) throw Invalid(c, "fmod must be 1 for floating point inputs");
            if (a.DType.IsIntegral() && a.DType == b.DType)
            {
                // Exact integer remainders: fmod takes the dividend's sign (C), otherwise the divisor's (Python); x mod 0 is 0.
                return One(IntegerMap2(a, b,
                    (x, y) => y == 0 || y == -1 ? 0 : fmod || x % y == 0 || (x % y < 0) == (y < 0) ? x % y : x % y + y,
                    (x, y) => y == 0 ? 0 : x % y));
            }
            return One(Map2(a, b, fmod ? (x, y) => x % y
                : (x, y) => y == 0 ? 0 : x - Math.Floor(x / y) * y, a.DType));
        });
        r.Add("Max", c => One(Fold(c, (a, b) => a.Maximum(b))));
        r.Add("Min", c => One(Fold(c, (a, b) => a.Minimum(b))));
        r.Add("Sum", c => One(Fold(c, (a, b) => a.Add(b))));
        r.Add("Mean", c => One(Fold(c, (a, b) => a.Add(b)).Div(c.Inputs.Count(t => t is not null))));

        r.Add("Equal", c => One(c.Input(0).Eq(c.Input(1))));
        r.Add("Less", c => One(c.Input(0).Lt(c.Input(1))));
        r.Add("LessOrEqual", c => One(c.Input(0).Le(c.Input(1))));
        r.Add("Greater", c => One(c.Input(0).Gt(c.Input(1))));
        r.Add("GreaterOrEqual", c => One(c.Input(0).Ge(c.Input(1))));
        r.Add("And", c => One(c.Input(0).LogicalAnd(c.Input(1))));
        r.Add("Or", c => One(c.Input(0).LogicalOr(c.Input(1))));
        r.Add("Xor", c => One(c.Input(0).LogicalXor(c.Input(1))));
        r.Add("Not", c => One(c.Input(0).LogicalNot()));
        r.Add("BitwiseAnd", c => One(Bitwise(c.Input(0), c.Input(1), (x, y) => x & y)));
        r.Add("BitwiseOr", c => One(Bitwise(c.Input(0), c.Input(1), (x, y) => x | y)));
        r.Add("BitwiseXor", c => One(Bitwise(c.Input(0), c.Input(1), (x, y) => x ^ y)));
        r.Add("BitwiseNot", c => One(Bitwise(c.Input(0), c.Input(0), (x, _) => ~x)));
        r.Add("BitShift", c =>
        {
            // NOTE: ONNX defines BitShift on unsigned types only. The 64 bits hold the element (uint64 reinterpreted);
            // a left shift's overflow is cut off when the result is narrowed back to the element type.
            var x0 = c.Input(0);
            if (!x0.DType.IsUnsigned()) throw Unsupported(c, $"element type {x0.DType}");
            int bits = x0.DType.ElementSize() * 8;
            var dir = c.Node.GetString("direction", "");
            if (dir is not ("LEFT" or "RIGHT")) throw Invalid(c, $"direction must be LEFT or RIGHT, got '{dir}'");
            return One(Bitwise(x0, c.Input(1), (x, y) => unchecked((ulong)y) >= (ulong)bits ? 0
                : dir == "LEFT" ? x << (int)y : unchecked((long)((ulong)x >> (int)y))));
        }, since: 11);

        Unary(r, "Abs", Math.Abs, t => t.Abs());
        Unary(r, "Neg", x => -x, t => t.Neg());
        Unary(r, "Exp", Math.Exp, t => t.Exp());
        Unary(r, "Log", Math.Log, t => t.Log());
        Unary(r, "Sqrt", Math.Sqrt, t => t.Sqrt());
        Unary(r, "Reciprocal", x => 1 / x, null);
        Unary(r, "Floor", Math.Floor, null);
        Unary(r, "Ceil", Math.Ceiling, null);
        Unary(r, "Round", x => Math.Round(x, MidpointRounding.ToEven), null);
        Unary(r, "Sign", x => double.IsNaN(x) ? x : Math.Sign(x), null);
        Unary(r, "Sin", Math.Sin, null);
        Unary(r, "Cos", Math.Cos, null);
        Unary(r, "Tan", Math.Tan, null);
        Unary(r, "Asin", Math.Asin, null);
        Unary(r, "Acos", Math.Acos, null);
        Unary(r, "Atan", Math.Atan, null);
        Unary(r, "Sinh", Math.Sinh, null);
        Unary(r, "Cosh", Math.Cosh, null);
        Unary(r, "Asinh", Math.Asinh, null);
        Unary(r, "Acosh", Math.Acosh, null);
        Unary(r, "Atanh", Math.Atanh, null);
        Unary(r, "Erf", Erf, null);
        r.Add("IsNaN", c => One(Map(c.Input(0), x => double.IsNaN(x) ? 1 : 0, DType.Bool)));
        r.Add("IsInf", c =>
        {
            bool neg = c.Node.GetInt("detect_negative", 1) != 0, pos = c.Node.GetInt("detect_positive", 1) != 0;
            return One(Map(c.Input(0), x => (pos && double.IsPositiveInfinity(x)) || (neg && double.IsNegativeInfinity(x)) ? 1 : 0, DType.Bool));
        });
    }

    static void Unary(OnnxOps r, string name, Func<double, double> f, Func<Tensor, Tensor>? fast) =>
        r.Add(name, c =>
        {
            var x = c.Input(0);
            return One(fast is not null && x.DType == DType.Float32 ? fast(x) : Map(x, f));
        });

    static Tensor Fold(OpContext c, Func<Tensor, Tensor, Tensor> f)
    {
        Tensor? acc = null;
        foreach (var t in c.Inputs)
            if (t is not null) acc = acc is null ? t : f(acc, t);
        return acc ?? throw Invalid(c, "needs at least one input");
    }

    /// <summary>
    /// An integer binary op with broadcasting, exact in 64 bits: <paramref name="signed"/> for signed types (and bool),
    /// <paramref name="unsigned"/> for unsigned ones (uint64 needs unsigned arithmetic); the result has a's dtype.
    /// </summary>
    static Tensor IntegerMap2(Tensor a, Tensor b, Func<long, long, long> signed, Func<ulong, ulong, ulong> unsigned)
    {
        if (!a.DType.IsIntegral() || a.DType != b.DType)
            throw new DTypeException($"integer op: needs two tensors of one integer type, got {a.DType.TorchName()} and {b.DType.TorchName()}");
        var shape = BroadcastShape(a.Shape, b.Shape);
        var x = Longs(a.Expand(shape));
        var y = Longs(b.Expand(shape));
        var r = new long[x.Length];
        bool u = a.DType.IsUnsigned();
        for (int i = 0; i < r.Length; i++) r[i] = u ? unchecked((long)unsigned((ulong)x[i], (ulong)y[i])) : signed(x[i], y[i]);
        return Tensor.FromArray(r, r.Length).Reshape(shape).To(a.DType);
    }

    static Tensor Bitwise(Tensor a, Tensor b, Func<long, long, long> f)
    {
        if (!a.DType.IsIntegral()) throw new DTypeException($"bitwise: needs integer inputs, got {a.DType}");
        var shape = BroadcastShape(a.Shape, b.Shape);
        var x = Longs(a.Expand(shape));
        var y = Longs(b.Expand(shape));
        var r = new long[x.Length];
        for (int i = 0; i < r.Length; i++) r[i] = f(x[i], y[i]);
        return Tensor.FromArray(r, r.Length).Reshape(shape).To(a.DType);
    }

    /// <summary>erf(x) to double precision (W. J. Cody's rational approximations via the complementary function).</summary>
    public static double Erf(double x)
    {
        if (double.IsNaN(x)) return x;
        double ax = Math.Abs(x);
        if (ax < 0.5)
        {
            // Maclaurin series, converges fast near zero.
            double term = x, sum = x, x2 = x * x;
            for (int n = 1; n < 30; n++)
            {
                term *= -x2 / n;
                sum += term / (2 * n + 1);
            }
            return 2 / Math.Sqrt(Math.PI) * sum;
        }
        // erfc by continued fraction (Lentz), accurate for |x| >= 0.5.
        double erfc = ErfcCf(ax);
        return x > 0 ? 1 - erfc : erfc - 1;
    }

    static double ErfcCf(double x)
    {
        if (x > 27) return 0;
        // erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...))))
        double tiny = 1e-300;
        double f = x, cc = x, d = 0;
        for (int n = 1; n < 500; n++)
        {
            double an = n / 2.0;
            d = x + an * d;
            d = Math.Abs(d) < tiny ? 1 / tiny : 1 / d;
            cc = x + an / cc;
            if (Math.Abs(cc) < tiny) cc = tiny;
            double delta = cc * d;
            f *= delta;
            if (Math.Abs(delta - 1) < 1e-16) break;
        }
        return Math.Exp(-x * x) / Math.Sqrt(Math.PI) / f;
    }
}
