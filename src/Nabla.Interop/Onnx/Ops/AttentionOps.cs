using Nabla.Graph;
using static Nabla.Interop.Onnx.Ops.OpUtil;

namespace Nabla.Interop.Onnx.Ops;

/// <summary>
/// Attention (opset 23): softmax(softcap(Q·Kᵀ·scale) + bias)·V with a KV cache (past_key/past_value → present_*),
/// grouped-query heads, boolean or additive masks, causal masking offset by the cache, and the optional QK output.
/// A reference loop in double.
/// </summary>
internal static class AttentionOps
{
    public static void Register(OnnxOps r)
    {
        r.Add("Attention", Attention, since: 23);
        r.Add("RotaryEmbedding", c => One(Rotary(c)), since: 23);
    }

    /// <summary>
    /// X (B, H, S, D) or (B, S, H·D) with num_heads; the first rotary_embedding_dim (default D) features of each head are
    /// rotated in pairs, halves (x_i, x_{i+r/2}) or interleaved (x_2i, x_2i+1), by cos/sin taken from the caches at
    /// position_ids (B, S), or given per (B, S) when position_ids is absent.
    /// </summary>
    static Tensor Rotary(OpContext c)
    {
        var x = c.Input(0);
        bool fourD = x.Dim == 4;
        if (x.Dim is not (3 or 4)) throw Invalid(c, $"input must be rank 3 or 4, got [{string.Join(", ", x.Shape)}]");
        int b = x.Size(0), s = fourD ? x.Size(2) : x.Size(1);
        int heads = fourD ? x.Size(1) : (int)c.Node.GetInt("num_heads", 0);
        if (heads <= 0 || (!fourD && x.Size(2) % heads != 0)) throw Invalid(c, "3-D input needs num_heads dividing the hidden size");
        int d = fourD ? x.Size(3) : x.Size(2) / heads;
        int rot = (int)c.Node.GetInt("rotary_embedding_dim", 0);
        if (rot == 0) rot = d;
        if (rot > d || rot % 2 != 0) throw Invalid(c, $"rotary_embedding_dim {rot} must be even and at most the head size {d}");
        int half = rot / 2;
        bool interleaved = c.Node.GetInt("interleaved", 0) != 0;
        Tensor cosT = c.Input(1), sinT = c.Input(2);
        var pos = c.OptionalInput(3) is { } p ? Longs(p) : null;
        var cos = cosT.ToDoubleArray();
        var sin = sinT.ToDoubleArray();
        int width = cosT.Size(-1);
        if (width < half) throw Invalid(c, $"cos_cache [{string.Join(", ", cosT.Shape)}] has fewer than {half} columns");
        // x as (B, S, H, D)
        var v = (fourD ? x.Permute(0, 2, 1, 3) : x.Reshape(b, s, heads, d)).ToDoubleArray();
        var o = (double[])v.Clone();
        for (int n = 0; n < b; n++)
            for (int t = 0; t < s; t++)
            {
                long row = pos is null ? n * s + t : pos[n * s + t];
                if (row < 0 || row * width >= cos.Length) throw Invalid(c, $"position {row} is outside the cos/sin cache");
                for (int h = 0; h < heads; h++)
                {
                    int off = ((n * s + t) * heads + h) * d;
                    for (int i = 0; i < half; i++)
                    {
                        int i1 = interleaved ? off + 2 * i : off + i, i2 = interleaved ? off + 2 * i + 1 : off + half + i;
                        double cs = cos[row * width + i], sn = sin[row * width + i], x1 = v[i1], x2 = v[i2];
                        o[i1] = cs * x1 - sn * x2;
                        o[i2] = sn * x1 + cs * x2;
                    }
                }
            }
        var y = FromDoubles(o, [b, s, heads, d], x.DType);
        return fourD ? y.Permute(0, 2, 1, 3).Contiguous() : y.Reshape(x.Shape);
    }

    static Tensor?[] Attention(OpContext c)
    {
        Tensor q = c.Input(0), k = c.Input(1), v = c.Input(2);
        if (q.Dim != k.Dim || q.Dim != v.Dim || q.Dim is not (3 or 4))
            throw new ShapeMismatchException($"{c.Node.Describe()}: Q, K and V must all be rank 3 or 4; got [{string.Join(", ", q.Shape)}], [{string.Join(", ", k.Shape)}], [{string.Join(", ", v.Shape)}]");
        bool threeD = q.Dim == 3;
        if (threeD)
        {
            // (B, S, heads·D) → (B, heads, S, D)
            long qh = c.Node.GetIntOrNull("q_num_heads") ?? throw Invalid(c, "3-D inputs need q_num_heads");
            long kvh = c.Node.GetIntOrNull("kv_num_heads") ?? throw Invalid(c, "3-D inputs need kv_num_heads");
            q = Heads(c, q, (int)qh);
            k = Heads(c, k, (int)kvh);
            v = Heads(c, v, (int)kvh);
        }
        var pastK = c.OptionalInput(4);
        var pastV = c.OptionalInput(5);
        var nonpad = c.OptionalInput(6) is { } np ? Longs(np) : null;
        var presentK = pastK is null ? k : Tensor.Cat([pastK, k], 2);
        var presentV = pastV is null ? v : Tensor.Cat([pastV, v], 2);
        int b = q.Size(0), hq = q.Size(1), sq = q.Size(2), d = q.Size(3);
        int hkv = presentK.Size(1), total = presentK.Size(2), dv = presentV.Size(3);
        if (presentK.Size(0) != b || presentV.Size(0) != b || presentK.Size(3) != d || presentV.Size(1) != hkv || presentV.Size(2) != total || hkv == 0 || hq % hkv != 0)
            throw new ShapeMismatchException($"{c.Node.Describe()}: Q [{string.Join(", ", q.Shape)}] does not fit K [{string.Join(", ", presentK.Shape)}] and V [{string.Join(", ", presentV.Shape)}]");
        int group = hq / hkv;
        double scale = c.Node.GetFloat("scale", 1 / Math.Sqrt(d));
        double softcap = c.Node.GetFloat("softcap", 0);
        bool causal = c.Node.GetInt("is_causal", 0) != 0;
        long mode = c.Node.GetInt("qk_matmul_output_mode", 0);
        if (mode is < 0 or > 3) throw Unsupported(c, $"qk_matmul_output_mode {mode}");

        var bias = Bias(c, c.OptionalInput(3), b, hq, sq, total);
        int past = pastK?.Size(2) ?? 0;
        var Q = q.ToDoubleArray();
        var K = presentK.ToDoubleArray();
        var V = presentV.ToDoubleArray();
        var y = new double[b * hq * sq * dv];
        var qkOut = new double[b * hq * sq * total];
        var row = new double[total];
        for (int n = 0; n < b; n++)
            for (int h = 0; h < hq; h++)
            {
                int kh = h / group;
                for (int i = 0; i < sq; i++)
                {
                    int qOff = ((n * hq + h) * sq + i) * d;
                    long offset = pastK is null && nonpad is not null ? nonpad[n] - sq : past;
                    double max = double.NegativeInfinity;
                    for (int j = 0; j < total; j++)
                    {
                        int kOff = ((n * hkv + kh) * total + j) * d;
                        double s = 0;
                        for (int e = 0; e < d; e++) s += Q[qOff + e] * K[kOff + e];
                        s *= scale;
                        double raw = s;
                        if (softcap > 0) s = softcap * Math.Tanh(s / softcap);
                        double capped = s;
                        s += bias?[((n * hq + h) * sq + i) * total + j] ?? 0;
                        if (causal && j > i + offset) s = double.NegativeInfinity;
                        if (nonpad is not null && j >= nonpad[n]) s = double.NegativeInfinity;
                        row[j] = s;
                        max = Math.Max(max, s);
                        int at = ((n * hq + h) * sq + i) * total + j;
                        qkOut[at] = mode switch { 0 => softcap > 0 ? capped : raw, 1 => capped, _ => s };
                    }
                    double sum = 0;
                    for (int j = 0; j < total; j++) { row[j] = Math.Exp(row[j] - max); sum += row[j]; }
                    for (int j = 0; j < total; j++)
                    {
                        row[j] /= sum;
                        if (mode == 3) qkOut[((n * hq + h) * sq + i) * total + j] = row[j];
                    }
                    int yOff = ((n * hq + h) * sq + i) * dv;
                    for (int j = 0; j < total; j++)
                    {
                        int vOff = ((n * hkv + kh) * total + j) * dv;
                        double p = row[j];
                        for (int e = 0; e < dv; e++) y[yOff + e] += p * V[vOff + e];
                    }
                }
            }
        var dtype = c.Input(0).DType;
        var Y = FromDoubles(y, [b, hq, sq, dv], dtype);
        if (threeD) Y = Y.Permute(0, 2, 1, 3).Contiguous().Reshape(b, sq, hq * dv);
        return Outputs(c, Y, presentK.Contiguous(), presentV.Contiguous(), c.WantsOutput(3) ? FromDoubles(qkOut, [b, hq, sq, total], dtype) : null);
    }

    static Tensor Heads(OpContext c, Tensor x, int heads)
    {
        if (heads <= 0 || x.Size(2) % heads != 0) throw Invalid(c, $"hidden size {x.Size(2)} is not divisible by {heads} heads");
        return x.Reshape(x.Size(0), x.Size(1), heads, x.Size(2) / heads).Permute(0, 2, 1, 3);
    }

    /// <summary>
    /// The additive mask as (B, Hq, Sq, T) doubles: a boolean mask gives 0 (attend) or -inf; a float mask is added as is;
    /// a mask shorter than T in its last dimension is padded with -inf (false).
    /// </summary>
    static double[]? Bias(OpContext c, Tensor? mask, int b, int hq, int sq, int total)
    {
        if (mask is null) return null;
        if (mask.Dim == 0) mask = mask.Reshape(1);
        if (mask.Size(-1) > total) throw Invalid(c, $"attn_mask [{string.Join(", ", mask.Shape)}] is longer than the {total} keys");
        var m = mask.DType == DType.Bool ? Map(mask, v => v != 0 ? 0 : double.NegativeInfinity, DType.Float64) : mask.To(DType.Float64);
        if (m.Size(-1) < total)
        {
            var padShape = m.Shape.ToArray();
            padShape[^1] = total - m.Size(-1);
            m = Tensor.Cat([m, Tensor.Full(padShape, double.NegativeInfinity, DType.Float64)], m.Dim - 1);
        }
        try { return m.Expand(b, hq, sq, total).ToDoubleArray(); }
        catch (ShapeMismatchException e)
        {
            throw new ShapeMismatchException($"{c.Node.Describe()}: attn_mask [{string.Join(", ", mask.Shape)}] does not broadcast to [{b}, {hq}, {sq}, {total}]: {e.Message}");
        }
    }
}
