using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Nabla.Optim;

/// <summary>A set of parameters with its own options (lr, weight_decay, ...), like a PyTorch param group.</summary>
public sealed class ParamGroup
{
    public List<Tensor> Params { get; }
    public Dictionary<string, double> Options { get; }

    public ParamGroup(IEnumerable<Tensor> parameters, Dictionary<string, double>? options = null)
    {
        Params = parameters.ToList();
        Options = options ?? new();
    }

    public double this[string key]
    {
        get => Options.TryGetValue(key, out var v) ? v : throw new KeyNotFoundException($"param group has no option '{key}'");
        set => Options[key] = value;
    }

    public double Lr { get => this["lr"]; set => this["lr"] = value; }
}

/// <summary>
/// The state of an optimizer in PyTorch's layout: per-parameter tensors keyed by the parameter's index across
/// all groups, and each group's options with its parameter indices.
/// </summary>
public sealed class OptimizerState
{
    public Dictionary<int, Dictionary<string, Tensor>> State { get; } = new();
    public List<(Dictionary<string, double> options, List<int> paramIndices)> ParamGroups { get; } = new();
}

/// <summary>Base of the optimizers: parameter groups, per-parameter state, ZeroGrad and state dicts.</summary>
public abstract class Optimizer
{
    public List<ParamGroup> ParamGroups { get; } = new();
    protected readonly Dictionary<Tensor, Dictionary<string, Tensor>> state = new(ReferenceEqualityComparer.Instance);
    readonly Dictionary<string, double> defaults;

    protected Optimizer(IEnumerable<ParamGroup> groups, Dictionary<string, double> defaults)
    {
        this.defaults = defaults;
        foreach (var g in groups) AddParamGroup(g);
        if (ParamGroups.Count == 0 || ParamGroups.All(g => g.Params.Count == 0))
            throw new NablaException($"{GetType().Name}: got an empty parameter list");
    }

    protected static IEnumerable<ParamGroup> One(IEnumerable<Tensor> parameters) => [new ParamGroup(parameters)];

    public void AddParamGroup(ParamGroup group)
    {
        foreach (var (k, v) in defaults)
            if (!group.Options.ContainsKey(k)) group.Options[k] = v;
        foreach (var p in group.Params)
        {
            if (!p.IsLeaf) throw new NablaException($"{GetType().Name}: can't optimize a non-leaf tensor");
            if (ParamGroups.Any(g => g.Params.Any(q => ReferenceEquals(q, p))))
                throw new NablaException($"{GetType().Name}: some parameters appear in more than one parameter group");
        }
        if (!group.Options.ContainsKey("initial_lr")) group.Options["initial_lr"] = group.Options["lr"];
        ParamGroups.Add(group);
    }

    /// <summary>Sets every parameter's gradient to null (set_to_none=True, PyTorch's default) or to zeros.</summary>
    public void ZeroGrad(bool setToNone = true)
    {
        // A gradient no caller has read goes back to StorageCache here, for the next backward (see Tensor.Grad).
        foreach (var g in ParamGroups)
            foreach (var p in g.Params)
            {
                var grad = p.GradInternal;
                if (setToNone || grad is null) p.Grad = null;
                else p.SetPrivateGrad(Tensor.ZerosLike(grad));
            }
    }

    /// <summary>Performs one update from the parameters' gradients (parameters without a gradient are skipped).</summary>
    public void Step()
    {
        using var _ = GradMode.NoGrad();
        foreach (var g in ParamGroups)
            foreach (var p in g.Params)
            {
                // (GradInternal: the step reads a gradient without making it the caller's, so it can still be recycled.)
                var grad = p.GradInternal;
                if (grad is null) continue;
                if (!state.TryGetValue(p, out var s)) state[p] = s = new Dictionary<string, Tensor>();
                if (TryUpdateInPlace(p, grad, s, g))
                {
                    p.BumpVersion();
                    KeepState(s);
                    continue;
                }
                var updated = Update(p.Detach(), grad.Detach(), s, g);
                p.Detach().Copy_(updated);
                KeepState(s);
            }
    }

    // The state lives as long as the optimizer, whatever dispose scope the step ran in.
    static void KeepState(Dictionary<string, Tensor> s)
    {
        foreach (var t in s.Values) t.storage.Keep();
    }

    /// <summary>
    /// A fused in-place update for float32 contiguous parameters (one pass, no temporaries); returns false to use
    /// <see cref="Update"/>, the readable tensor-op form that defines the algorithm. Both are tested against PyTorch.
    /// </summary>
    /// <remarks>The gradient given to this and to <see cref="Update"/> is valid during the call only: its buffer may be
    /// recycled for the next step's gradient after <see cref="ZeroGrad"/> (see <see cref="Tensor.Grad"/>). A subclass that
    /// needs it later keeps a copy (<c>grad.Clone()</c>), as the built-in optimizers do in their state.</remarks>
    protected virtual bool TryUpdateInPlace(Tensor param, Tensor grad, Dictionary<string, Tensor> paramState, ParamGroup group) => false;

    /// <summary>The float32 span of a contiguous tensor, or empty when the fast path does not apply.</summary>
    protected static Span<float> FloatSpan(Tensor t) => t.DType == DType.Float32 && t.IsContiguous ? t.ContiguousSpan<float>() : default;

    /// <summary>Returns the new value of one parameter given its gradient, mutating its state.</summary>
    protected abstract Tensor Update(Tensor param, Tensor grad, Dictionary<string, Tensor> paramState, ParamGroup group);

    public OptimizerState StateDict()
    {
        var sd = new OptimizerState();
        int index = 0;
        foreach (var g in ParamGroups)
        {
            var idx = new List<int>();
            foreach (var p in g.Params)
            {
                if (state.TryGetValue(p, out var s)) sd.State[index] = s.ToDictionary(kv => kv.Key, kv => kv.Value.Clone());
                idx.Add(index++);
            }
            sd.ParamGroups.Add((new Dictionary<string, double>(g.Options), idx));
        }
        return sd;
    }

    public void LoadStateDict(OptimizerState sd)
    {
        if (sd.ParamGroups.Count != ParamGroups.Count)
            throw new ModelFormatException($"{GetType().Name}.load_state_dict: the state has {sd.ParamGroups.Count} parameter groups, the optimizer has {ParamGroups.Count}");
        for (int gi = 0; gi < ParamGroups.Count; gi++)
        {
            var (opts, idx) = sd.ParamGroups[gi];
            var g = ParamGroups[gi];
            if (idx.Count != g.Params.Count)
                throw new ModelFormatException($"{GetType().Name}.load_state_dict: group {gi} has {idx.Count} parameters in the state but {g.Params.Count} in the optimizer");
            foreach (var (k, v) in opts) g.Options[k] = v;
            for (int j = 0; j < idx.Count; j++)
            {
                var p = g.Params[j];
                if (sd.State.TryGetValue(idx[j], out var s))
                {
                    foreach (var (k, t) in s)
                        if (t.Dim > 0 && !ShapeUtil.Equal(t.shape, p.shape))
                            throw new ShapeMismatchException($"{GetType().Name}.load_state_dict: state '{k}' of parameter {idx[j]} has shape {ShapeUtil.Format(t.shape)}, the parameter has {ShapeUtil.Format(p.shape)}");
                    state[p] = s.ToDictionary(kv => kv.Key, kv => kv.Value.Clone().Detach());
                    KeepState(state[p]);
                }
                else state.Remove(p);
            }
        }
    }

    protected static double Opt(ParamGroup g, string key) => g[key];

    protected static double StepCount(Dictionary<string, Tensor> s)
    {
        double step = s.TryGetValue("step", out var t) ? t.Item() + 1 : 1;
        s["step"] = Tensor.Scalar(step);
        return step;
    }
}

/// <summary>Stochastic gradient descent with momentum, dampening, Nesterov and weight decay (PyTorch's update rule).</summary>
public sealed class SGD : Optimizer
{
    public SGD(IEnumerable<Tensor> parameters, double lr = 1e-3, double momentum = 0, double dampening = 0, double weightDecay = 0, bool nesterov = false)
        : this(One(parameters), lr, momentum, dampening, weightDecay, nesterov) { }

    public SGD(IEnumerable<ParamGroup> groups, double lr = 1e-3, double momentum = 0, double dampening = 0, double weightDecay = 0, bool nesterov = false)
        : base(groups, new() { ["lr"] = lr, ["momentum"] = momentum, ["dampening"] = dampening, ["weight_decay"] = weightDecay, ["nesterov"] = nesterov ? 1 : 0 })
    {
        if (nesterov && (momentum <= 0 || dampening != 0)) throw new NablaException("SGD: Nesterov momentum requires a momentum and zero dampening");
    }

    protected override bool TryUpdateInPlace(Tensor param, Tensor grad, Dictionary<string, Tensor> s, ParamGroup grp)
    {
        var p = FloatSpan(param);
        var g = FloatSpan(grad);
        if (p.Length != param.NumElements || g.Length != p.Length || param.NumElements == 0) return false;
        float wd = (float)grp["weight_decay"], mom = (float)grp["momentum"], omd = (float)(1 - grp["dampening"]), lr = (float)grp.Lr;
        bool nesterov = grp["nesterov"] != 0;
        if (mom == 0)
        {
            int i0 = 0;
            if (Vector256.IsHardwareAccelerated)
            {
                var vlr = Vector256.Create(lr);
                var vwd = Vector256.Create(wd);
                ref float rp = ref MemoryMarshal.GetReference(p);
                ref float rg = ref MemoryMarshal.GetReference(g);
                for (; i0 + 8 <= p.Length; i0 += 8)
                {
                    var pv = Vector256.LoadUnsafe(ref rp, (nuint)i0);
                    var gv = Vector256.LoadUnsafe(ref rg, (nuint)i0);
                    (pv - vlr * (gv + vwd * pv)).StoreUnsafe(ref rp, (nuint)i0);
                }
            }
            for (int i = i0; i < p.Length; i++) p[i] -= lr * (g[i] + wd * p[i]);
            return true;
        }
        bool fresh = !s.TryGetValue("momentum_buffer", out var bufT);
        if (fresh) s["momentum_buffer"] = bufT = Tensor.Zeros(param.Shape);
        var buf = FloatSpan(bufT!);
        if (buf.Length != p.Length) return false;
        for (int i = 0; i < p.Length; i++)
        {
            float d = g[i] + wd * p[i];
            float b = fresh ? d : mom * buf[i] + omd * d;
            buf[i] = b;
            p[i] -= lr * (nesterov ? d + mom * b : b);
        }
        return true;
    }

    protected override Tensor Update(Tensor p, Tensor g, Dictionary<string, Tensor> s, ParamGroup grp)
    {
        double wd = grp["weight_decay"], mom = grp["momentum"], damp = grp["dampening"];
        if (wd != 0) g = g.Add(p.Mul(wd));
        if (mom != 0)
        {
            Tensor buf = s.TryGetValue("momentum_buffer", out var b) ? b.Mul(mom).Add(g.Mul(1 - damp)) : g.Clone();
            s["momentum_buffer"] = buf;
            g = grp["nesterov"] != 0 ? g.Add(buf.Mul(mom)) : buf;
        }
        return p.Sub(g.Mul(grp.Lr));
    }
}

/// <summary>Adam (and AdamW when decoupled) with optional AMSGrad, following PyTorch's formulas.</summary>
public class Adam : Optimizer
{
    readonly bool decoupled;

    public Adam(IEnumerable<Tensor> parameters, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 0, bool amsgrad = false)
        : this(One(parameters), lr, beta1, beta2, eps, weightDecay, amsgrad, false) { }

    public Adam(IEnumerable<ParamGroup> groups, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 0, bool amsgrad = false)
        : this(groups, lr, beta1, beta2, eps, weightDecay, amsgrad, false) { }

    protected Adam(IEnumerable<ParamGroup> groups, double lr, double beta1, double beta2, double eps, double weightDecay, bool amsgrad, bool decoupled)
        : base(groups, new() { ["lr"] = lr, ["beta1"] = beta1, ["beta2"] = beta2, ["eps"] = eps, ["weight_decay"] = weightDecay, ["amsgrad"] = amsgrad ? 1 : 0 })
    {
        this.decoupled = decoupled;
    }

    protected override bool TryUpdateInPlace(Tensor param, Tensor grad, Dictionary<string, Tensor> s, ParamGroup grp)
    {
        if (grp["amsgrad"] != 0) return false;
        var p = FloatSpan(param);
        var g = FloatSpan(grad);
        if (p.Length != param.NumElements || g.Length != p.Length || param.NumElements == 0) return false;
        if (!s.ContainsKey("exp_avg")) { s["exp_avg"] = Tensor.Zeros(param.Shape); s["exp_avg_sq"] = Tensor.Zeros(param.Shape); }
        var m = FloatSpan(s["exp_avg"]);
        var v = FloatSpan(s["exp_avg_sq"]);
        if (m.Length != p.Length || v.Length != p.Length) return false;
        double lr = grp.Lr, b1 = grp["beta1"], b2 = grp["beta2"], eps = grp["eps"], wd = grp["weight_decay"];
        double step = StepCount(s);
        double bc1 = 1 - Math.Pow(b1, step), bc2 = 1 - Math.Pow(b2, step);
        float fb1 = (float)b1, fb2 = (float)b2, stepSize = (float)(lr / bc1), sqrtBc2 = (float)Math.Sqrt(bc2), feps = (float)eps;
        float decay = decoupled ? (float)(1 - lr * wd) : 1, l2 = decoupled ? 0 : (float)wd;
        // NOTE: 1 - beta is formed in double and rounded once, as PyTorch passes it as a Python float.
        float omb1 = (float)(1 - b1), omb2 = (float)(1 - b2);
        int i0 = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            // The same operations in the same order as the scalar loop below (no fused multiply-add), eight lanes at a time.
            ref float rp = ref MemoryMarshal.GetReference(p);
            ref float rg = ref MemoryMarshal.GetReference(g);
            ref float rm = ref MemoryMarshal.GetReference(m);
            ref float rv = ref MemoryMarshal.GetReference(v);
            var vdecay = Vector256.Create(decay);
            var vl2 = Vector256.Create(l2);
            var vb1 = Vector256.Create(fb1);
            var vb2 = Vector256.Create(fb2);
            var vomb1 = Vector256.Create(omb1);
            var vomb2 = Vector256.Create(omb2);
            var vstep = Vector256.Create(stepSize);
            var vsqrtBc2 = Vector256.Create(sqrtBc2);
            var veps = Vector256.Create(feps);
            for (; i0 + 8 <= p.Length; i0 += 8)
            {
                var pv = Vector256.LoadUnsafe(ref rp, (nuint)i0) * vdecay;
                var gv = Vector256.LoadUnsafe(ref rg, (nuint)i0) + vl2 * pv;
                var mv = vb1 * Vector256.LoadUnsafe(ref rm, (nuint)i0) + vomb1 * gv;
                var vv = vb2 * Vector256.LoadUnsafe(ref rv, (nuint)i0) + vomb2 * gv * gv;
                mv.StoreUnsafe(ref rm, (nuint)i0);
                vv.StoreUnsafe(ref rv, (nuint)i0);
                (pv - vstep * mv / (Vector256.Sqrt(vv) / vsqrtBc2 + veps)).StoreUnsafe(ref rp, (nuint)i0);
            }
        }
        for (int i = i0; i < p.Length; i++)
        {
            float pi = p[i] * decay;
            float gi = g[i] + l2 * pi;
            float mi = fb1 * m[i] + omb1 * gi;
            float vi = fb2 * v[i] + omb2 * gi * gi;
            m[i] = mi;
            v[i] = vi;
            // NOTE: same operation order as PyTorch (sqrt(v) / sqrt(bc2) + eps, then step·m / denom), so results agree to rounding.
            p[i] = pi - stepSize * mi / (MathF.Sqrt(vi) / sqrtBc2 + feps);
        }
        return true;
    }

    protected override Tensor Update(Tensor p, Tensor g, Dictionary<string, Tensor> s, ParamGroup grp)
    {
        double lr = grp.Lr, b1 = grp["beta1"], b2 = grp["beta2"], eps = grp["eps"], wd = grp["weight_decay"];
        double step = StepCount(s);
        if (wd != 0)
        {
            if (decoupled) p = p.Mul(1 - lr * wd);
            else g = g.Add(p.Mul(wd));
        }
        var m = s.TryGetValue("exp_avg", out var m0) ? m0 : Tensor.ZerosLike(p);
        var v = s.TryGetValue("exp_avg_sq", out var v0) ? v0 : Tensor.ZerosLike(p);
        m = m.Mul(b1).Add(g.Mul(1 - b1));
        v = v.Mul(b2).Add(g.Mul(g).Mul(1 - b2));
        s["exp_avg"] = m;
        s["exp_avg_sq"] = v;
        double bc1 = 1 - Math.Pow(b1, step), bc2 = 1 - Math.Pow(b2, step);
        Tensor denomBase = v;
        if (grp["amsgrad"] != 0)
        {
            var mx = s.TryGetValue("max_exp_avg_sq", out var mx0) ? mx0.Maximum(v) : v.Clone();
            s["max_exp_avg_sq"] = mx;
            denomBase = mx;
        }
        var denom = denomBase.Sqrt().Div(Math.Sqrt(bc2)).Add(eps);
        return p.Sub(m.Div(denom).Mul(lr / bc1));
    }
}

/// <summary>Adam with decoupled weight decay (default 0.01), as torch.optim.AdamW.</summary>
public sealed class AdamW : Adam
{
    public AdamW(IEnumerable<Tensor> parameters, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 1e-2, bool amsgrad = false)
        : base(One(parameters), lr, beta1, beta2, eps, weightDecay, amsgrad, true) { }

    public AdamW(IEnumerable<ParamGroup> groups, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 1e-2, bool amsgrad = false)
        : base(groups, lr, beta1, beta2, eps, weightDecay, amsgrad, true) { }
}

public sealed class RMSprop : Optimizer
{
    public RMSprop(IEnumerable<Tensor> parameters, double lr = 1e-2, double alpha = 0.99, double eps = 1e-8, double weightDecay = 0, double momentum = 0, bool centered = false)
        : this(One(parameters), lr, alpha, eps, weightDecay, momentum, centered) { }

    public RMSprop(IEnumerable<ParamGroup> groups, double lr = 1e-2, double alpha = 0.99, double eps = 1e-8, double weightDecay = 0, double momentum = 0, bool centered = false)
        : base(groups, new() { ["lr"] = lr, ["alpha"] = alpha, ["eps"] = eps, ["weight_decay"] = weightDecay, ["momentum"] = momentum, ["centered"] = centered ? 1 : 0 }) { }

    protected override Tensor Update(Tensor p, Tensor g, Dictionary<string, Tensor> s, ParamGroup grp)
    {
        double alpha = grp["alpha"], eps = grp["eps"], wd = grp["weight_decay"], mom = grp["momentum"];
        StepCount(s);
        if (wd != 0) g = g.Add(p.Mul(wd));
        var sq = (s.TryGetValue("square_avg", out var sq0) ? sq0 : Tensor.ZerosLike(p)).Mul(alpha).Add(g.Mul(g).Mul(1 - alpha));
        s["square_avg"] = sq;
        Tensor avg;
        if (grp["centered"] != 0)
        {
            var ga = (s.TryGetValue("grad_avg", out var ga0) ? ga0 : Tensor.ZerosLike(p)).Mul(alpha).Add(g.Mul(1 - alpha));
            s["grad_avg"] = ga;
            avg = sq.Sub(ga.Mul(ga)).Sqrt().Add(eps);
        }
        else avg = sq.Sqrt().Add(eps);
        if (mom > 0)
        {
            var buf = (s.TryGetValue("momentum_buffer", out var b0) ? b0 : Tensor.ZerosLike(p)).Mul(mom).Add(g.Div(avg));
            s["momentum_buffer"] = buf;
            return p.Sub(buf.Mul(grp.Lr));
        }
        return p.Sub(g.Div(avg).Mul(grp.Lr));
    }
}

public sealed class Adagrad : Optimizer
{
    public Adagrad(IEnumerable<Tensor> parameters, double lr = 1e-2, double lrDecay = 0, double weightDecay = 0, double initialAccumulatorValue = 0, double eps = 1e-10)
        : this(One(parameters), lr, lrDecay, weightDecay, initialAccumulatorValue, eps) { }

    public Adagrad(IEnumerable<ParamGroup> groups, double lr = 1e-2, double lrDecay = 0, double weightDecay = 0, double initialAccumulatorValue = 0, double eps = 1e-10)
        : base(groups, new() { ["lr"] = lr, ["lr_decay"] = lrDecay, ["weight_decay"] = weightDecay, ["initial_accumulator_value"] = initialAccumulatorValue, ["eps"] = eps }) { }

    protected override Tensor Update(Tensor p, Tensor g, Dictionary<string, Tensor> s, ParamGroup grp)
    {
        double step = StepCount(s);
        if (grp["weight_decay"] != 0) g = g.Add(p.Mul(grp["weight_decay"]));
        double clr = grp.Lr / (1 + (step - 1) * grp["lr_decay"]);
        var sum = (s.TryGetValue("sum", out var s0) ? s0 : Tensor.FullLike(p, grp["initial_accumulator_value"])).Add(g.Mul(g));
        s["sum"] = sum;
        return p.Sub(g.Div(sum.Sqrt().Add(grp["eps"])).Mul(clr));
    }
}

/// <summary>Gradient clipping (torch.nn.utils.clip_grad_norm_ and clip_grad_value_).</summary>
public static class GradClip
{
    /// <summary>Scales all gradients so their joint p-norm is at most maxNorm; returns the norm before clipping.</summary>
    public static double ClipGradNorm(IEnumerable<Tensor> parameters, double maxNorm, double normType = 2)
    {
        var grads = parameters.Where(p => p.GradInternal is not null).Select(p => p.GradInternal!).ToList();
        if (grads.Count == 0) return 0;
        double total;
        using (GradMode.NoGrad())
        {
            if (double.IsPositiveInfinity(normType)) total = grads.Max(g => g.Abs().Max().Item());
            else total = Math.Pow(grads.Sum(g => Math.Pow(g.Norm(normType).Item(), normType)), 1 / normType);
            double coef = maxNorm / (total + 1e-6);
            if (coef < 1)
                foreach (var p in parameters) if (p.GradInternal is { } grad) p.SetPrivateGrad(grad.Mul(coef));
        }
        return total;
    }

    public static void ClipGradValue(IEnumerable<Tensor> parameters, double clipValue)
    {
        using (GradMode.NoGrad())
            foreach (var p in parameters) if (p.GradInternal is { } grad) p.SetPrivateGrad(grad.Clamp(-clipValue, clipValue));
    }
}
