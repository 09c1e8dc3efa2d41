using System.Numerics;

namespace Nabla;

public sealed partial class Tensor
{
    // ---------- type promotion ----------

    static DType ResultType(Tensor a, Tensor b)
    {
        bool za = a.shape.Length == 0, zb = b.shape.Length == 0;
        if (za == zb) return DTypes.Promote(a.DType, b.DType);
        var (dim, zero) = za ? (b, a) : (a, b);
        int cd = Category(dim.DType), cz = Category(zero.DType);
        return cz > cd ? zero.DType : dim.DType;
    }

    static int Category(DType t) => t == DType.Bool ? 0 : t.IsFloatingPoint() ? 2 : 1;

    /// <summary>A C# number as an operand for this tensor: takes the tensor's dtype unless it raises the category.</summary>
    Tensor ScalarOperand(double v)
    {
        DType dt = DType;
        if (!DType.IsFloatingPoint() && v != Math.Floor(v)) dt = DType.Float32;
        else if (DType == DType.Bool && v is not (0 or 1)) dt = DType.Int64;
        return Scalar(v, dt);
    }

    static DType ComputeType(DType t) => t is DType.Float16 or DType.BFloat16 ? DType.Float32 : t;

    static Tensor ArithRaw<TOp>(string op, Tensor a, Tensor b, int[] outShape) where TOp : IArithOp
    {
        var dt = a.DType;
        if (dt == DType.Bool) throw new DTypeException($"{op}: arithmetic on two bool tensors is not supported; convert with To(DType.Int64) or use LogicalAnd/LogicalOr");
        var ct = ComputeType(dt);
        if (ct != dt)
        {
            var r32 = ArithRaw<TOp>(op, Cpu.Cast(a, ct), Cpu.Cast(b, ct), outShape);
            return Cpu.Cast(r32, dt);
        }
        return dt switch
        {
            DType.Float32 => Cpu.Map2<float, float, Arith<float, TOp>>(a, b, outShape, dt),
            DType.Float64 => Cpu.Map2<double, double, Arith<double, TOp>>(a, b, outShape, dt),
            DType.Int64 => Cpu.Map2<long, long, Arith<long, TOp>>(a, b, outShape, dt),
            DType.Int32 => Cpu.Map2<int, int, Arith<int, TOp>>(a, b, outShape, dt),
            DType.Int8 => Cpu.Map2<sbyte, sbyte, Arith<sbyte, TOp>>(a, b, outShape, dt),
            DType.UInt8 => Cpu.Map2<byte, byte, Arith<byte, TOp>>(a, b, outShape, dt),
            DType.Int16 => Cpu.Map2<short, short, Arith<short, TOp>>(a, b, outShape, dt),
            DType.UInt16 => Cpu.Map2<ushort, ushort, Arith<ushort, TOp>>(a, b, outShape, dt),
            DType.UInt32 => Cpu.Map2<uint, uint, Arith<uint, TOp>>(a, b, outShape, dt),
            DType.UInt64 => Cpu.Map2<ulong, ulong, Arith<ulong, TOp>>(a, b, outShape, dt),
            _ => throw new DTypeException($"{op}: dtype {dt.TorchName()} is not supported"),
        };
    }

    static Tensor Float2Raw<TOp>(Tensor a, Tensor b, int[] outShape) where TOp : IFloatOp2
    {
        var dt = a.DType;
        if (dt == DType.Float64) return Cpu.Map2<double, double, Float2<double, TOp>>(a, b, outShape, dt);
        if (dt == DType.Float32) return Cpu.Map2<float, float, Float2<float, TOp>>(a, b, outShape, dt);
        var r = Float2Raw<TOp>(Cpu.Cast(a, DType.Float32), Cpu.Cast(b, DType.Float32), outShape);
        return dt.IsFloatingPoint() ? Cpu.Cast(r, dt) : r;
    }

    static Tensor CmpRaw<TOp>(string op, Tensor a, Tensor b) where TOp : ICmpOp
    {
        if (Graph.Tracer.Active is { } trace)   // graph tracing: comparisons record no gradient, so they report here
        {
            Tensor traced;
            using (Graph.Tracer.Suspend()) traced = CmpRaw<TOp>(op, a, b);
            return Graph.Tracer.Compare(trace, op, a, b, traced);
        }
        var dt = ResultType(a, b);
        if (dt == DType.Bool) dt = DType.UInt8;
        var ct = ComputeType(dt);
        var x = Cpu.CastIfNeeded(a, ct);
        var y = Cpu.CastIfNeeded(b, ct);
        var s = ShapeUtil.Broadcast(op, a.shape, b.shape);
        return ct switch
        {
            DType.Float32 => Cpu.Map2<float, bool, Cmp<float, TOp>>(x, y, s, DType.Bool),
            DType.Float64 => Cpu.Map2<double, bool, Cmp<double, TOp>>(x, y, s, DType.Bool),
            DType.Int64 => Cpu.Map2<long, bool, Cmp<long, TOp>>(x, y, s, DType.Bool),
            DType.Int32 => Cpu.Map2<int, bool, Cmp<int, TOp>>(x, y, s, DType.Bool),
            DType.Int8 => Cpu.Map2<sbyte, bool, Cmp<sbyte, TOp>>(x, y, s, DType.Bool),
            DType.UInt8 => Cpu.Map2<byte, bool, Cmp<byte, TOp>>(x, y, s, DType.Bool),
            DType.Int16 => Cpu.Map2<short, bool, Cmp<short, TOp>>(x, y, s, DType.Bool),
            DType.UInt16 => Cpu.Map2<ushort, bool, Cmp<ushort, TOp>>(x, y, s, DType.Bool),
            DType.UInt32 => Cpu.Map2<uint, bool, Cmp<uint, TOp>>(x, y, s, DType.Bool),
            DType.UInt64 => Cpu.Map2<ulong, bool, Cmp<ulong, TOp>>(x, y, s, DType.Bool),
            _ => throw new DTypeException($"{op}: dtype {ct.TorchName()} is not supported"),
        };
    }

    /// <summary>Promotes both operands to the result type (differentiably) and broadcasts their shapes.</summary>
    static (Tensor, Tensor, int[]) Prepare(string op, Tensor a, Tensor b)
    {
        var dt = ResultType(a, b);
        return (a.To(dt), b.To(dt), ShapeUtil.Broadcast(op, a.shape, b.shape));
    }

    // ---------- arithmetic ----------

    public Tensor Add(Tensor other)
    {
        var (a, b, s) = Prepare("add", this, other);
        var r = ArithRaw<AddOp>("add", a, b, s);
        return Record(r, "add", [a, b], g => [g.SumTo(a.shape), g.SumTo(b.shape)]);
    }

    /// <summary>this + alpha·other (torch.add with alpha).</summary>
    public Tensor Add(Tensor other, double alpha) => alpha == 1 ? Add(other) : Add(other.Mul(alpha));

    public Tensor Sub(Tensor other)
    {
        var (a, b, s) = Prepare("sub", this, other);
        var r = ArithRaw<SubOp>("sub", a, b, s);
        return Record(r, "sub", [a, b], g => [g.SumTo(a.shape), b.requiresGrad ? g.Neg().SumTo(b.shape) : null]);
    }

    public Tensor Mul(Tensor other)
    {
        var (a, b, s) = Prepare("mul", this, other);
        var r = ArithRaw<MulOp>("mul", a, b, s);
        return Record(r, "mul", [a, b], g => [a.requiresGrad ? g.Mul(b).SumTo(a.shape) : null, b.requiresGrad ? g.Mul(a).SumTo(b.shape) : null], a, b);
    }

    /// <summary>True division: integer operands give float32, as in PyTorch.</summary>
    public Tensor Div(Tensor other)
    {
        var (a, b, s) = Prepare("div", this, other);
        if (!a.DType.IsFloatingPoint()) { a = a.To(DType.Float32); b = b.To(DType.Float32); }
        var r = ArithRaw<DivOp>("div", a, b, s);
        return Record(r, "div", [a, b], g => [a.requiresGrad ? g.Div(b).SumTo(a.shape) : null,
            b.requiresGrad ? g.Neg().Mul(a).Div(b.Mul(b)).SumTo(b.shape) : null], a, b);
    }

    public Tensor Pow(Tensor exponent)
    {
        var (a, b, s) = Prepare("pow", this, exponent);
        if (!a.DType.IsFloatingPoint()) { a = a.To(DType.Float32); b = b.To(DType.Float32); }
        var r = Float2Raw<PowOp>(a, b, s);
        return Record(r, "pow", [a, b], g =>
        {
            Tensor? ga = null, gb = null;
            if (a.requiresGrad)
            {
                // d/da a^b = b·a^(b-1); PyTorch defines it as 0 where b == 0.
                var d = b.Mul(a.Pow(b.Sub(1.0)));
                ga = g.Mul(Where(b.Eq(0.0), ZerosLike(d), d)).SumTo(a.shape);
            }
            if (b.requiresGrad)
            {
                // d/db a^b = a^b·ln(a); taken as 0 where a == 0 and b >= 0.
                var d = a.Pow(b).Mul(a.Log());
                gb = g.Mul(Where(a.Eq(0.0).LogicalAnd(b.Ge(0.0)), ZerosLike(d), d)).SumTo(b.shape);
            }
            return [ga, gb];
        }, a, b);
    }

    public Tensor Maximum(Tensor other)
    {
        var (a, b, s) = Prepare("maximum", this, other);
        var r = ArithRaw<MaxOp>("maximum", a, b, s);
        return Record(r, "maximum", [a, b], g => MinMaxGrad(g, a, b, a.Gt(b)), a, b);
    }

    public Tensor Minimum(Tensor other)
    {
        var (a, b, s) = Prepare("minimum", this, other);
        var r = ArithRaw<MinOp>("minimum", a, b, s);
        return Record(r, "minimum", [a, b], g => MinMaxGrad(g, a, b, a.Lt(b)), a, b);
    }

    // NOTE: ties split the gradient evenly between both inputs, as PyTorch does.
    static Tensor?[] MinMaxGrad(Tensor g, Tensor a, Tensor b, Tensor aWins)
    {
        var tie = a.Eq(b);
        var half = g.Mul(0.5);
        var ga = Where(aWins, g, Where(tie, half, ZerosLike(g)));
        var gb = Where(aWins, ZerosLike(g), Where(tie, half, g));
        return [a.requiresGrad ? ga.SumTo(a.shape) : null, b.requiresGrad ? gb.SumTo(b.shape) : null];
    }

    public Tensor Add(double v) => Add(ScalarOperand(v));
    public Tensor Sub(double v) => Sub(ScalarOperand(v));
    public Tensor Mul(double v) => Mul(ScalarOperand(v));
    public Tensor Div(double v) => Div(ScalarOperand(v));
    public Tensor Pow(double v)
    {
        if (v == 2) return Mul(this);
        return Pow(ScalarOperand(v));
    }
    public Tensor Maximum(double v) => Maximum(ScalarOperand(v));
    public Tensor Minimum(double v) => Minimum(ScalarOperand(v));

    /// <summary>Limits values to [min, max]; gradient flows where the value was inside.</summary>
    public Tensor Clamp(double? min = null, double? max = null)
    {
        var x = this;
        if (min is double lo) x = Where(x.Lt(lo), FullLike(x, lo), x);
        if (max is double hi) x = Where(x.Gt(hi), FullLike(x, hi), x);
        return x;
    }

    public static Tensor operator +(Tensor a, Tensor b) => a.Add(b);
    public static Tensor operator -(Tensor a, Tensor b) => a.Sub(b);
    public static Tensor operator *(Tensor a, Tensor b) => a.Mul(b);
    public static Tensor operator /(Tensor a, Tensor b) => a.Div(b);
    public static Tensor operator +(Tensor a, double b) => a.Add(b);
    public static Tensor operator -(Tensor a, double b) => a.Sub(b);
    public static Tensor operator *(Tensor a, double b) => a.Mul(b);
    public static Tensor operator /(Tensor a, double b) => a.Div(b);
    public static Tensor operator +(double a, Tensor b) => b.Add(a);
    public static Tensor operator -(double a, Tensor b) => b.ScalarOperand(a).Sub(b);
    public static Tensor operator *(double a, Tensor b) => b.Mul(a);
    public static Tensor operator /(double a, Tensor b) => b.ScalarOperand(a).Div(b);
    public static Tensor operator -(Tensor a) => a.Neg();

    // ---------- comparisons and logic (not differentiable) ----------

    public Tensor Eq(Tensor o) => CmpRaw<EqOp>("eq", this, o);
    public Tensor Ne(Tensor o) => CmpRaw<NeOp>("ne", this, o);
    public Tensor Lt(Tensor o) => CmpRaw<LtOp>("lt", this, o);
    public Tensor Le(Tensor o) => CmpRaw<LeOp>("le", this, o);
    public Tensor Gt(Tensor o) => CmpRaw<GtOp>("gt", this, o);
    public Tensor Ge(Tensor o) => CmpRaw<GeOp>("ge", this, o);
    public Tensor Eq(double v) => Eq(ScalarOperand(v));
    public Tensor Ne(double v) => Ne(ScalarOperand(v));
    public Tensor Lt(double v) => Lt(ScalarOperand(v));
    public Tensor Le(double v) => Le(ScalarOperand(v));
    public Tensor Gt(double v) => Gt(ScalarOperand(v));
    public Tensor Ge(double v) => Ge(ScalarOperand(v));

    Tensor AsBool() => DType == DType.Bool ? this : Ne(0.0);

    public Tensor LogicalAnd(Tensor o) => Cpu.Map2<bool, bool, BoolAnd>(AsBool(), o.AsBool(), ShapeUtil.Broadcast("logical_and", shape, o.shape), DType.Bool);
    public Tensor LogicalOr(Tensor o) => Cpu.Map2<bool, bool, BoolOr>(AsBool(), o.AsBool(), ShapeUtil.Broadcast("logical_or", shape, o.shape), DType.Bool);
    public Tensor LogicalXor(Tensor o) => Cpu.Map2<bool, bool, BoolXor>(AsBool(), o.AsBool(), ShapeUtil.Broadcast("logical_xor", shape, o.shape), DType.Bool);
    public Tensor LogicalNot() => AsBool().Eq(Scalar(0, DType.Bool));

    /// <summary>True where all elements agree within rtol·|other| + atol (torch.allclose).</summary>
    public bool AllClose(Tensor other, double rtol = 1e-5, double atol = 1e-8)
    {
        var a = ToDoubleArray();
        var b = other.Expand(ShapeUtil.Broadcast("allclose", shape, other.shape)).ToDoubleArray();
        if (a.Length != b.Length) return false;
        for (int i = 0; i < a.Length; i++)
        {
            if (double.IsNaN(a[i]) || double.IsNaN(b[i])) return false;
            if (Math.Abs(a[i] - b[i]) > atol + rtol * Math.Abs(b[i])) return false;
        }
        return true;
    }

    /// <summary>Elementwise choice: x where condition is true, else y. Broadcasts all three.</summary>
    public static Tensor Where(Tensor condition, Tensor x, Tensor y)
    {
        var (a, b, s) = Prepare("where", x, y);
        s = ShapeUtil.Broadcast("where", condition.shape, s);
        var cond = condition.AsBool();
        var r = Empty(s, a.DType);
        var ce = cond.Expand(s).ContiguousCopyRaw().storage.As<bool>();
        var ae = a.Detach().Expand(s).ContiguousCopyRaw();
        var be = b.Detach().Expand(s).ContiguousCopyRaw();
        WhereKernel(ce, ae, be, r);
        if (Graph.Tracer.Active is { } trace) Graph.Tracer.Where(trace, condition, a, b, r);   // the condition is not a Record input
        return Record(r, "where", [a, b], g =>
        {
            var z = ZerosLike(g);
            return [a.requiresGrad ? Where(cond, g, z).SumTo(a.shape) : null, b.requiresGrad ? Where(cond, z, g).SumTo(b.shape) : null];
        }, cond);
    }

    static void WhereKernel(bool[] c, Tensor a, Tensor b, Tensor r)
    {
        switch (r.DType)
        {
            case DType.Float32: Select(c, a.storage.As<float>(), b.storage.As<float>(), r.storage.As<float>()); break;
            case DType.Float64: Select(c, a.storage.As<double>(), b.storage.As<double>(), r.storage.As<double>()); break;
            case DType.Int64: Select(c, a.storage.As<long>(), b.storage.As<long>(), r.storage.As<long>()); break;
            case DType.Int32: Select(c, a.storage.As<int>(), b.storage.As<int>(), r.storage.As<int>()); break;
            case DType.Int8: Select(c, a.storage.As<sbyte>(), b.storage.As<sbyte>(), r.storage.As<sbyte>()); break;
            case DType.UInt8: Select(c, a.storage.As<byte>(), b.storage.As<byte>(), r.storage.As<byte>()); break;
            case DType.Bool: Select(c, a.storage.As<bool>(), b.storage.As<bool>(), r.storage.As<bool>()); break;
            case DType.Float16: Select(c, a.storage.As<Half>(), b.storage.As<Half>(), r.storage.As<Half>()); break;
            case DType.BFloat16: Select(c, a.storage.As<BFloat16>(), b.storage.As<BFloat16>(), r.storage.As<BFloat16>()); break;
            case DType.Int16: Select(c, a.storage.As<short>(), b.storage.As<short>(), r.storage.As<short>()); break;
            case DType.UInt16: Select(c, a.storage.As<ushort>(), b.storage.As<ushort>(), r.storage.As<ushort>()); break;
            case DType.UInt32: Select(c, a.storage.As<uint>(), b.storage.As<uint>(), r.storage.As<uint>()); break;
            case DType.UInt64: Select(c, a.storage.As<ulong>(), b.storage.As<ulong>(), r.storage.As<ulong>()); break;
            default: throw DTypes.Unknown(r.DType);
        }

        static void Select<T>(bool[] c, T[] a, T[] b, T[] d)
        {
            for (int i = 0; i < d.Length; i++) d[i] = c[i] ? a[i] : b[i];
        }
    }

    public static Tensor Where(Tensor condition, Tensor x, double y) => Where(condition, x, x.ScalarOperand(y));
    public static Tensor Where(Tensor condition, double x, Tensor y) => Where(condition, y.ScalarOperand(x), y);

    /// <summary>Out-of-place masked_fill: value where mask is true.</summary>
    public Tensor MaskedFill(Tensor mask, double value) => Where(mask, ScalarOperand(value).To(DType), this);

    // ---------- unary ----------

    static Tensor FloatUnaryRaw<TOp>(Tensor x) where TOp : IFloatOp1
    {
        switch (x.DType)
        {
            case DType.Float32: return Cpu.Map1<float, float, Float1<float, TOp>>(x, DType.Float32);
            case DType.Float64: return Cpu.Map1<double, double, Float1<double, TOp>>(x, DType.Float64);
            case DType.Float16:
            case DType.BFloat16:
                return Cpu.Cast(FloatUnaryRaw<TOp>(Cpu.Cast(x, DType.Float32)), x.DType);
            default: return FloatUnaryRaw<TOp>(Cpu.Cast(x, DType.Float32));
        }
    }

    Tensor FloatInput() => DType.IsFloatingPoint() ? this : To(DType.Float32);

    public Tensor Neg()
    {
        if (!DType.IsFloatingPoint()) return Scalar(0, DType).Sub(this);
        var r = FloatUnaryRaw<NegOp>(this);
        return Record(r, "neg", [this], g => [g.Neg()]);
    }

    public Tensor Exp()
    {
        var x = FloatInput();
        var r = FloatUnaryRaw<ExpOp>(x);
        return Record(r, "exp", [x], g => [g.Mul(r)], r);
    }

    public Tensor Log()
    {
        var x = FloatInput();
        var r = FloatUnaryRaw<LogOp>(x);
        return Record(r, "log", [x], g => [g.Div(x)], x);
    }

    public Tensor Log1p()
    {
        var x = FloatInput();
        var r = FloatUnaryRaw<Log1pOp>(x);
        return Record(r, "log1p", [x], g => [g.Div(x.Add(1.0))], x);
    }

    public Tensor Expm1()
    {
        var x = FloatInput();
        var r = FloatUnaryRaw<Expm1Op>(x);
        return Record(r, "expm1", [x], g => [g.Mul(r.Add(1.0))], r);
    }

    public Tensor Sqrt()
    {
        var x = FloatInput();
        var r = FloatUnaryRaw<SqrtOp>(x);
        return Record(r, "sqrt", [x], g => [g.Div(r.Mul(2.0))], r);
    }

    public Tensor Rsqrt() => Sqrt().Reciprocal();

    public Tensor Reciprocal() => FloatInput().ScalarOperand(1.0).To(FloatInput().DType).Div(FloatInput());

    public Tensor Square() => Mul(this);

    public Tensor Abs()
    {
        if (!DType.IsFloatingPoint()) return Where(Lt(0.0), Neg(), this);
        var r = FloatUnaryRaw<AbsOp>(this);
        var x = this;
        return Record(r, "abs", [x], g => [g.Mul(x.Sign())], x);
    }

    /// <summary>-1, 0 or 1 (zero gradient).</summary>
    public Tensor Sign() => FloatUnaryRaw<SignOp>(FloatInput()).To(DType.IsFloatingPoint() ? DType : DType.Float32);

    public Tensor Floor() => DType.IsFloatingPoint() ? ZeroGrad(FloatUnaryRaw<FloorOp>(this), "floor") : this;
    public Tensor Ceil() => DType.IsFloatingPoint() ? ZeroGrad(FloatUnaryRaw<CeilOp>(this), "ceil") : this;
    public Tensor Round() => DType.IsFloatingPoint() ? ZeroGrad(FloatUnaryRaw<RoundOp>(this), "round") : this;

    Tensor ZeroGrad(Tensor r, string op) => Record(r, op, [this], g => [ZerosLike(g)]);

    public Tensor Sin()
    {
        var x = FloatInput();
        var r = FloatUnaryRaw<SinOp>(x);
        return Record(r, "sin", [x], g => [g.Mul(x.Cos())], x);
    }

    public Tensor Cos()
    {
        var x = FloatInput();
        var r = FloatUnaryRaw<CosOp>(x);
        return Record(r, "cos", [x], g => [g.Mul(x.Sin()).Neg()], x);
    }

    public Tensor Tanh()
    {
        var x = FloatInput();
        var r = FloatUnaryRaw<TanhOp>(x);
        return Record(r, "tanh", [x], g => [g.Mul(r.Mul(r).Neg().Add(1.0))], r);
    }

    public Tensor Sigmoid()
    {
        var x = FloatInput();
        var r = FloatUnaryRaw<SigmoidOp>(x);
        return Record(r, "sigmoid", [x], g => [g.Mul(r.Mul(r.Neg().Add(1.0)))], r);
    }

    public Tensor Relu()
    {
        var x = FloatInput();
        var r = FloatUnaryRaw<ReluOp>(x);
        return Record(r, "relu", [x], g => [ReluBackward(g, r)], r);
    }

    /// <summary>g where y &gt; 0, else 0; differentiable in g (its mask is constant).</summary>
    static Tensor ReluBackward(Tensor g, Tensor y)
    {
        var r = Cpu.ReluBackwardFast(g, y) ?? Float2Raw<ReluBackwardOp>(g, y.Detach(), g.shape);
        return Record(r, "relu_backward", [g], gg => [ReluBackward(gg, y)], y);
    }

    public Tensor Erf()
    {
        var x = FloatInput();
        var r = FloatUnaryRaw<ErfOp>(x);
        // d/dx erf(x) = 2/sqrt(pi)·exp(-x²)
        return Record(r, "erf", [x], g => [g.Mul(x.Mul(x).Neg().Exp().Mul(2.0 / Math.Sqrt(Math.PI)))], x);
    }

    // Composite activations: no gradient rules of their own.

    public Tensor LeakyRelu(double negativeSlope = 0.01) => Where(Gt(0.0), this, Mul(negativeSlope));

    /// <summary>x for x &gt; 0, alpha·(exp(x)-1) otherwise. expm1 sees min(x, 0) so the unused branch cannot overflow.</summary>
    // NOTE: Clamp, not Minimum: Minimum splits the gradient of a tie at x = 0, PyTorch gives the whole alpha·g there.
    public Tensor Elu(double alpha = 1.0) => Where(Gt(0.0), this, Clamp(max: 0.0).Expm1().Mul(alpha));

    /// <summary>GELU, exact ("none": x·Φ(x)) or the tanh approximation ("tanh").</summary>
    public Tensor Gelu(string approximate = "none")
    {
        if (approximate == "tanh")
        {
            var inner = Add(Mul(this).Mul(this).Mul(0.044715)).Mul(Math.Sqrt(2 / Math.PI));
            return Mul(0.5).Mul(inner.Tanh().Add(1.0));
        }
        if (approximate != "none") throw new NablaException($"gelu: approximate must be 'none' or 'tanh', got '{approximate}'");
        return Mul(0.5).Mul(Mul(1 / Math.Sqrt(2)).Erf().Add(1.0));
    }

    public Tensor Silu() => Mul(Sigmoid());

    /// <summary>log(1 + exp(beta·x))/beta, linear above the threshold, as in PyTorch.</summary>
    public Tensor Softplus(double beta = 1, double threshold = 20)
    {
        var bx = Mul(beta);
        // log1p(exp(-|bx|)) + max(bx, 0) is the overflow-free form.
        var sp = bx.Abs().Neg().Exp().Log1p().Add(bx.Relu()).Div(beta);
        return Where(bx.Gt(threshold), this, sp);
    }

    // NOTE: unlike Clamp, no gradient at the bounds themselves (PyTorch's hardtanh_backward).
    public Tensor Hardtanh(double min = -1, double max = 1) => Where(Gt(min).LogicalAnd(Lt(max)), this, Clamp(min, max).Detach());

    // ---------- in-place (bump the version counter; refused on tensors that take part in autograd) ----------

    void CheckInPlace(string op)
    {
        if (GradMode.IsEnabled && requiresGrad)
            throw new AutogradException($"{op}: a {(IsLeaf ? "leaf tensor" : "tensor")} that requires grad cannot be modified in place while grad mode is on; use GradMode.NoGrad() or the out-of-place op");
    }

    /// <summary>Copies <paramref name="src"/> (broadcast, cast) into this tensor's elements.</summary>
    public Tensor Copy_(Tensor src)
    {
        CheckInPlace("copy_");
        ShapeUtil.Broadcast("copy_", shape, src.shape);
        AssignFrom(src);
        BumpVersion();
        return this;
    }

    public Tensor Fill_(double value)
    {
        CheckInPlace("fill_");
        AssignFrom(Scalar(value, DType));
        BumpVersion();
        return this;
    }

    public Tensor Zero_() => Fill_(0);

    public Tensor Add_(Tensor other, double alpha = 1)
    {
        CheckInPlace("add_");
        Tensor r;
        using (GradMode.NoGrad()) r = alpha == 1 ? Add(other) : Add(other.Mul(alpha));
        if (!ShapeUtil.Equal(r.shape, shape))
            throw new ShapeMismatchException($"add_: result of shape {ShapeUtil.Format(r.shape)} does not fit the output of shape {ShapeUtil.Format(shape)}");
        AssignFrom(r);
        BumpVersion();
        return this;
    }

    public Tensor Mul_(double v)
    {
        CheckInPlace("mul_");
        Tensor r;
        using (GradMode.NoGrad()) r = Mul(v);
        AssignFrom(r);
        BumpVersion();
        return this;
    }

    public Tensor Mul_(Tensor other)
    {
        CheckInPlace("mul_");
        Tensor r;
        using (GradMode.NoGrad()) r = Mul(other);
        if (!ShapeUtil.Equal(r.shape, shape))
            throw new ShapeMismatchException($"mul_: result of shape {ShapeUtil.Format(r.shape)} does not fit the output of shape {ShapeUtil.Format(shape)}");
        AssignFrom(r);
        BumpVersion();
        return this;
    }

    public Tensor MaskedFill_(Tensor mask, double value)
    {
        CheckInPlace("masked_fill_");
        Tensor r;
        using (GradMode.NoGrad()) r = MaskedFill(mask, value);
        AssignFrom(r);
        BumpVersion();
        return this;
    }
}

internal static partial class Cpu
{
    public static Tensor CastIfNeeded(Tensor t, DType dt) => t.DType == dt ? t : Cast(t, dt);
}
