using Nabla.Graph;
using static Nabla.Interop.Onnx.Ops.OpUtil;

namespace Nabla.Interop.Onnx.Ops;

/// <summary>
/// RNN, GRU and LSTM in ONNX's layouts: X (seq, batch, in) or with layout=1 (batch, seq, in); W (dirs, G·H, in),
/// R (dirs, G·H, H), B (dirs, 2·G·H) = [Wb, Rb]; gate order RNN i, GRU z r h, LSTM i o f c; peepholes P (dirs, 3H) i o f.
/// A reference loop in double, one batch row at a time, so that sequence_lens can stop each row on its own step.
/// </summary>
internal static class RecurrentOps
{
    enum Cell { Rnn, Gru, Lstm }

    public static void Register(OnnxOps r)
    {
        r.Add("RNN", c => Run(c, Cell.Rnn), since: 7);
        r.Add("GRU", c => Run(c, Cell.Gru), since: 7);
        r.Add("LSTM", c => Run(c, Cell.Lstm), since: 7);
    }

    static Tensor?[] Run(OpContext c, Cell cell)
    {
        int gates = cell switch { Cell.Rnn => 1, Cell.Gru => 3, _ => 4 };
        bool batchFirst = c.Node.GetInt("layout", 0) != 0;
        var xt = c.Input(0);
        if (xt.Dim != 3) throw Invalid(c, $"X must be rank 3, got [{string.Join(", ", xt.Shape)}]");
        if (batchFirst) xt = xt.Transpose(0, 1);
        int seq = xt.Size(0), batch = xt.Size(1), inSize = xt.Size(2);
        Tensor w = c.Input(1), rw = c.Input(2);
        string direction = c.Node.GetString("direction", "forward");
        int dirs = direction switch
        {
            "forward" or "reverse" => 1,
            "bidirectional" => 2,
            _ => throw Unsupported(c, $"direction '{direction}'"),
        };
        int hidden = (int)(c.Node.GetIntOrNull("hidden_size") ?? rw.Size(-1));
        int gh = gates * hidden;
        Expect(c, "W", w, [dirs, gh, inSize]);
        Expect(c, "R", rw, [dirs, gh, hidden]);
        var x = xt.ToDoubleArray();
        var W = w.ToDoubleArray();
        var R = rw.ToDoubleArray();
        double[] B = new double[dirs * 2 * gh];
        if (c.OptionalInput(3) is { } bt) { Expect(c, "B", bt, [dirs, 2 * gh]); B = bt.ToDoubleArray(); }
        var lens = new long[batch];
        Array.Fill(lens, seq);
        if (c.OptionalInput(4) is { } sl)
        {
            lens = Longs(sl);
            if (lens.Length != batch) throw Invalid(c, $"sequence_lens has {lens.Length} elements, expected {batch}");
            foreach (var l in lens)
                if (l < 0 || l > seq) throw Invalid(c, $"sequence length {l} is outside [0, {seq}]");
        }
        double[]? h0 = State(c, 5, batchFirst, dirs, batch, hidden, "initial_h");
        double[]? c0 = cell == Cell.Lstm ? State(c, 6, batchFirst, dirs, batch, hidden, "initial_c") : null;
        double[]? P = null;
        if (cell == Cell.Lstm && c.OptionalInput(7) is { } pt) { Expect(c, "P", pt, [dirs, 3 * hidden]); P = pt.ToDoubleArray(); }
        var acts = Activations(c, cell, dirs);
        double clip = c.Node.GetFloat("clip", double.PositiveInfinity);
        bool linearBeforeReset = c.Node.GetInt("linear_before_reset", 0) != 0;
        bool inputForget = c.Node.GetInt("input_forget", 0) != 0;

        var y = new double[seq * dirs * batch * hidden];
        var yh = new double[dirs * batch * hidden];
        var yc = new double[dirs * batch * hidden];
        var pre = new double[gh];
        var rh = new double[hidden];
        for (int d = 0; d < dirs; d++)
        {
            bool reverse = direction == "reverse" || d == 1;
            var (f, g, hAct) = (acts[d * 3], acts[d * 3 + 1], acts[d * 3 + 2]);
            int wOff = d * gh * inSize, rOff = d * gh * hidden, bOff = d * 2 * gh;
            for (int b = 0; b < batch; b++)
            {
                var h = new double[hidden];
                var cs = new double[hidden];
                if (h0 is not null) Array.Copy(h0, (d * batch + b) * hidden, h, 0, hidden);
                if (c0 is not null) Array.Copy(c0, (d * batch + b) * hidden, cs, 0, hidden);
                int len = (int)lens[b];
                for (int s = 0; s < len; s++)
                {
                    int t = reverse ? len - 1 - s : s;
                    int xOff = (t * batch + b) * inSize;
                    // pre[gate row] = x_t · W[row] + Wb[row] (+ h · R[row] + Rb[row], except GRU's h gate)
                    for (int row = 0; row < gh; row++)
                    {
                        double acc = B[bOff + row];
                        int wr = wOff + row * inSize;
                        for (int k = 0; k < inSize; k++) acc += x[xOff + k] * W[wr + k];
                        bool recurLater = cell == Cell.Gru && row >= 2 * hidden;
                        if (!recurLater)
                        {
                            acc += B[bOff + gh + row];
                            int rr = rOff + row * hidden;
                            for (int k = 0; k < hidden; k++) acc += h[k] * R[rr + k];
                        }
                        pre[row] = acc;
                    }
                    switch (cell)
                    {
                        case Cell.Rnn:
                            for (int j = 0; j < hidden; j++) h[j] = f(Clip(pre[j], clip));
                            break;
                        case Cell.Gru:
                        {
                            // z = f(pre_z), r = f(pre_r); h~ = g(x W_h + Wb_h + (r ⊙ h) R_h + Rb_h), or with
                            // linear_before_reset: g(x W_h + Wb_h + r ⊙ (h R_h + Rb_h)); h = (1 - z) ⊙ h~ + z ⊙ h.
                            for (int j = 0; j < 2 * hidden; j++) pre[j] = f(Clip(pre[j], clip));
                            for (int j = 0; j < hidden; j++) rh[j] = pre[hidden + j] * h[j];
                            var hNew = new double[hidden];
                            for (int j = 0; j < hidden; j++)
                            {
                                int rr = rOff + (2 * hidden + j) * hidden;
                                double rec = 0;
                                if (linearBeforeReset)
                                {
                                    for (int k = 0; k < hidden; k++) rec += h[k] * R[rr + k];
                                    rec = pre[hidden + j] * (rec + B[bOff + gh + 2 * hidden + j]);
                                }
                                else
                                {
                                    for (int k = 0; k < hidden; k++) rec += rh[k] * R[rr + k];
                                    rec += B[bOff + gh + 2 * hidden + j];
                                }
                                double cand = g(Clip(pre[2 * hidden + j] + rec, clip));
                                double z = pre[j];
                                hNew[j] = (1 - z) * cand + z * h[j];
                            }
                            h = hNew;
                            break;
                        }
                        default:
                        {
                            // i = f(pre_i + P_i ⊙ c), f = f(pre_f + P_f ⊙ c), c~ = g(pre_c), c = f ⊙ c + i ⊙ c~,
                            // o = f(pre_o + P_o ⊙ c_new), h = o ⊙ h(c).
                            int pOff = d * 3 * hidden;
                            for (int j = 0; j < hidden; j++)
                            {
                                double pi = P?[pOff + j] ?? 0, po = P?[pOff + hidden + j] ?? 0, pf = P?[pOff + 2 * hidden + j] ?? 0;
                                double ig = f(Clip(pre[j] + pi * cs[j], clip));
                                double fg = inputForget ? 1 - ig : f(Clip(pre[2 * hidden + j] + pf * cs[j], clip));
                                double cand = g(Clip(pre[3 * hidden + j], clip));
                                double cNew = fg * cs[j] + ig * cand;
                                double og = f(Clip(pre[hidden + j] + po * cNew, clip));
                                cs[j] = cNew;
                                h[j] = og * hAct(cNew);
                            }
                            break;
                        }
                    }
                    Array.Copy(h, 0, y, ((t * dirs + d) * batch + b) * hidden, hidden);
                }
                Array.Copy(h, 0, yh, (d * batch + b) * hidden, hidden);
                Array.Copy(cs, 0, yc, (d * batch + b) * hidden, hidden);
            }
        }
        var dtype = c.Input(0).DType;
        var Y = FromDoubles(y, [seq, dirs, batch, hidden], dtype);
        var Yh = FromDoubles(yh, [dirs, batch, hidden], dtype);
        var Yc = FromDoubles(yc, [dirs, batch, hidden], dtype);
        if (batchFirst)
        {
            Y = Y.Permute(2, 0, 1, 3).Contiguous();
            Yh = Yh.Transpose(0, 1).Contiguous();
            Yc = Yc.Transpose(0, 1).Contiguous();
        }
        return cell == Cell.Lstm ? Outputs(c, Y, Yh, Yc) : Outputs(c, Y, Yh);
    }

    static double Clip(double v, double clip) => v < -clip ? -clip : v > clip ? clip : v;

    static void Expect(OpContext c, string name, Tensor t, int[] shape)
    {
        if (!t.Shape.SequenceEqual(shape))
            throw new ShapeMismatchException($"{c.Node.Describe()}: {name} is [{string.Join(", ", t.Shape)}], expected [{string.Join(", ", shape)}]");
    }

    /// <summary>initial_h / initial_c as (dirs, batch, H) doubles (layout=1 stores them (batch, dirs, H)).</summary>
    static double[]? State(OpContext c, int input, bool batchFirst, int dirs, int batch, int hidden, string name)
    {
        if (c.OptionalInput(input) is not { } t) return null;
        Expect(c, name, t, batchFirst ? [batch, dirs, hidden] : [dirs, batch, hidden]);
        return (batchFirst ? t.Transpose(0, 1) : t).ToDoubleArray();
    }

    /// <summary>Three activations (f, g, h) per direction; RNN uses only f, GRU f and g.</summary>
    static Func<double, double>[] Activations(OpContext c, Cell cell, int dirs)
    {
        string[] defaults = cell switch
        {
            Cell.Rnn => ["Tanh"],
            Cell.Gru => ["Sigmoid", "Tanh"],
            _ => ["Sigmoid", "Tanh", "Tanh"],
        };
        var names = c.Node.GetStrings("activations");
        if (names is null || names.Length == 0) names = Enumerable.Repeat(defaults, dirs).SelectMany(a => a).ToArray();
        else if (names.Length == defaults.Length && dirs == 2) names = [.. names, .. names];
        if (names.Length != defaults.Length * dirs)
            throw Invalid(c, $"{names.Length} activations given, expected {defaults.Length * dirs}");
        var alphas = c.Node.GetFloats("activation_alpha") ?? [];
        var betas = c.Node.GetFloats("activation_beta") ?? [];
        int ai = 0, bi = 0;
        var result = new Func<double, double>[3 * dirs];
        for (int d = 0; d < dirs; d++)
            for (int k = 0; k < 3; k++)
            {
                if (k >= defaults.Length) { result[d * 3 + k] = v => v; continue; }
                var name = names[d * defaults.Length + k];
                // NOTE: activation_alpha/beta are consumed in order by the activations that take them.
                double A(double fallback) => ai < alphas.Length ? alphas[ai++] : fallback;
                double Bt(double fallback) => bi < betas.Length ? betas[bi++] : fallback;
                result[d * 3 + k] = name.ToLowerInvariant() switch
                {
                    "sigmoid" => v => 1 / (1 + Math.Exp(-v)),
                    "tanh" => Math.Tanh,
                    "relu" => v => Math.Max(v, 0),
                    "softsign" => v => v / (1 + Math.Abs(v)),
                    "softplus" => v => Math.Log(1 + Math.Exp(v)),
                    "affine" => Affine(A(1), Bt(0)),
                    "leakyrelu" => LeakyRelu(A(0.01)),
                    "thresholdedrelu" => ThresholdedRelu(A(1)),
                    "scaledtanh" => ScaledTanh(A(1), Bt(1)),
                    "hardsigmoid" => HardSigmoid(A(0.2), Bt(0.5)),
                    "elu" => Elu(A(1)),
                    _ => throw Unsupported(c, $"activation '{name}'"),
                };
            }
        return result;
    }

    static Func<double, double> Affine(double a, double b) => v => a * v + b;
    static Func<double, double> LeakyRelu(double a) => v => v >= 0 ? v : a * v;
    static Func<double, double> ThresholdedRelu(double a) => v => v > a ? v : 0;
    static Func<double, double> ScaledTanh(double a, double b) => v => a * Math.Tanh(b * v);
    static Func<double, double> HardSigmoid(double a, double b) => v => Math.Clamp(a * v + b, 0, 1);
    static Func<double, double> Elu(double a) => v => v >= 0 ? v : a * (Math.Exp(v) - 1);
}
