using System.Globalization;

namespace Nabla.NN;

/// <summary>
/// Shared parameters and layer loop of <see cref="LSTM"/> and <see cref="GRU"/>, with PyTorch's names and layouts:
/// weight_ih_l{k}[_reverse] [G·H, in], weight_hh_l{k}[_reverse] [G·H, H], bias_ih_l{k}[_reverse] [G·H],
/// bias_hh_l{k}[_reverse] [G·H], all initialized uniform(±1/sqrt(H)).
/// </summary>
public abstract class RecurrentBase : Module
{
    public int InputSize { get; }
    public int HiddenSize { get; }
    public int NumLayers { get; }
    public bool HasBias { get; }
    public bool BatchFirst { get; }
    public double DropoutP { get; }
    public bool Bidirectional { get; }
    protected int NumDirections => Bidirectional ? 2 : 1;

    // [layer * directions + direction] = (w_ih, w_hh, b_ih, b_hh)
    protected readonly (Tensor wIh, Tensor wHh, Tensor? bIh, Tensor? bHh)[] cells;

    private protected RecurrentBase(int gates, int inputSize, int hiddenSize, int numLayers, bool bias, bool batchFirst, double dropout, bool bidirectional, DType dtype)
    {
        if (inputSize <= 0 || hiddenSize <= 0) throw new NablaException($"{GetType().Name}: input_size and hidden_size must be positive, got {inputSize} and {hiddenSize}");
        if (numLayers < 1) throw new NablaException($"{GetType().Name}: num_layers must be at least 1, got {numLayers}");
        if (dropout < 0 || dropout > 1) throw new NablaException($"{GetType().Name}: dropout should be a number in range [0, 1], got {dropout}");
        (InputSize, HiddenSize, NumLayers, HasBias, BatchFirst, DropoutP, Bidirectional) = (inputSize, hiddenSize, numLayers, bias, batchFirst, dropout, bidirectional);
        cells = new (Tensor, Tensor, Tensor?, Tensor?)[numLayers * NumDirections];
        double bound = 1 / Math.Sqrt(hiddenSize);
        for (int layer = 0; layer < numLayers; layer++)
            for (int dir = 0; dir < NumDirections; dir++)
            {
                int layerIn = layer == 0 ? inputSize : hiddenSize * NumDirections;
                string sfx = "_l" + layer.ToString(CultureInfo.InvariantCulture) + (dir == 1 ? "_reverse" : "");
                var wIh = Init.Uniform(RegisterParameter("weight_ih" + sfx, Tensor.Zeros([gates * hiddenSize, layerIn], dtype)), -bound, bound);
                var wHh = Init.Uniform(RegisterParameter("weight_hh" + sfx, Tensor.Zeros([gates * hiddenSize, hiddenSize], dtype)), -bound, bound);
                Tensor? bIh = null, bHh = null;
                if (bias)
                {
                    bIh = Init.Uniform(RegisterParameter("bias_ih" + sfx, Tensor.Zeros([gates * hiddenSize], dtype)), -bound, bound);
                    bHh = Init.Uniform(RegisterParameter("bias_hh" + sfx, Tensor.Zeros([gates * hiddenSize], dtype)), -bound, bound);
                }
                cells[layer * NumDirections + dir] = (wIh, wHh, bIh, bHh);
            }
    }

    /// <summary>Brings the input to [T, B, in]; returns whether it was unbatched ([T, in]).</summary>
    protected Tensor ToSequenceFirst(Tensor input, out bool unbatched)
    {
        unbatched = input.Dim == 2;
        if (input.Dim != 2 && input.Dim != 3)
            throw new ShapeMismatchException($"{GetType().Name}: expected input to be 2-D or 3-D, got {input.Dim}-D {ShapeUtil.Format(input.shape)}");
        if (input.Size(-1) != InputSize)
            throw new ShapeMismatchException($"{GetType().Name}: input.size(-1) must be equal to input_size; expected {InputSize}, got {input.Size(-1)} (input {ShapeUtil.Format(input.shape)})");
        if (unbatched) return input.Unsqueeze(1);
        return BatchFirst ? input.Transpose(0, 1) : input;
    }

    protected Tensor FromSequenceFirst(Tensor output, bool unbatched) =>
        unbatched ? output.Squeeze(1) : BatchFirst ? output.Transpose(0, 1) : output;

    /// <summary>Checks an initial state ([L·D, B, H], or [L·D, H] when unbatched) and returns it as [L·D, B, H].</summary>
    protected Tensor CheckState(Tensor? state, int batch, bool unbatched, DType dtype, string name)
    {
        int[] expected = [NumLayers * NumDirections, batch, HiddenSize];
        if (state is null) return Tensor.Zeros(expected, dtype);
        var s = unbatched && state.Dim == 2 ? state.Unsqueeze(1) : state;
        if (!ShapeUtil.Equal(s.shape, expected))
            throw new ShapeMismatchException($"{GetType().Name}: expected {name} of size {ShapeUtil.Format(unbatched ? [expected[0], expected[2]] : expected)}, got {ShapeUtil.Format(state.shape)}");
        return s;
    }

    /// <summary>
    /// Runs every layer and direction. <paramref name="step"/> maps (precomputed input gates [B, G·H], the states, cell)
    /// to the new states, whose first element is the output h.
    /// </summary>
    /// <param name="x">(T, B, in)</param>
    /// <param name="states">per state kind (h, c...), each [L·D, B, H]</param>
    /// <returns>the last layer's output (T, B, D·H) and the final states, each [L·D, B, H]</returns>
    protected (Tensor output, Tensor[] finals) RunLayers(Tensor x, Tensor[] states, Func<Tensor, Tensor[], int, Tensor[]> step)
    {
        int T = x.Size(0);
        var finals = new Tensor[states.Length][];
        for (int k = 0; k < states.Length; k++) finals[k] = new Tensor[NumLayers * NumDirections];
        var layerInput = x;
        for (int layer = 0; layer < NumLayers; layer++)
        {
            var dirOutputs = new Tensor[NumDirections];
            for (int dir = 0; dir < NumDirections; dir++)
            {
                int ci = layer * NumDirections + dir;
                var (wIh, _, bIh, _) = cells[ci];
                // NOTE: the input projection of all time steps is one matmul: [T, B, G·H].
                var xGates = Functional.Linear(layerInput, wIh, bIh);
                var s = new Tensor[states.Length];
                for (int k = 0; k < states.Length; k++) s[k] = states[k].Select(0, ci);
                var outs = new Tensor[T];
                for (int i = 0; i < T; i++)
                {
                    int t = dir == 0 ? i : T - 1 - i;
                    s = step(xGates.Select(0, t), s, ci);
                    outs[t] = s[0];
                }
                for (int k = 0; k < states.Length; k++) finals[k][ci] = s[k];
                dirOutputs[dir] = Tensor.Stack(outs, 0);
            }
            layerInput = NumDirections == 1 ? dirOutputs[0] : Tensor.Cat(dirOutputs, -1);
            if (layer < NumLayers - 1 && DropoutP > 0) layerInput = Functional.Dropout(layerInput, DropoutP, Training);
        }
        return (layerInput, finals.Select(f => Tensor.Stack(f, 0)).ToArray());
    }

    protected override string ExtraRepr() =>
        $"{InputSize}, {HiddenSize}" + (NumLayers != 1 ? $", num_layers={NumLayers}" : "") + (HasBias ? "" : ", bias=False") +
        (BatchFirst ? ", batch_first=True" : "") + (DropoutP != 0 ? ", dropout=" + DropoutP.ToString(CultureInfo.InvariantCulture) : "") +
        (Bidirectional ? ", bidirectional=True" : "");

    /// <summary>One LSTM step: gates i, f, g, o. xGates [B, 4H] already holds W_ih·x + b_ih.</summary>
    internal static (Tensor h, Tensor c) LstmStep(Tensor xGates, Tensor h, Tensor c, Tensor wHh, Tensor? bHh)
    {
        var gates = xGates.Add(Functional.Linear(h, wHh, bHh));
        var g4 = gates.Chunk(4, -1);
        var i = g4[0].Sigmoid();
        var f = g4[1].Sigmoid();
        var g = g4[2].Tanh();
        var o = g4[3].Sigmoid();
        var c2 = f.Mul(c).Add(i.Mul(g));
        return (o.Mul(c2.Tanh()), c2);
    }

    /// <summary>One GRU step: gates r, z, n with n = tanh(W_in·x + b_in + r·(W_hn·h + b_hn)). xGates [B, 3H] holds W_ih·x + b_ih.</summary>
    internal static Tensor GruStep(Tensor xGates, Tensor h, Tensor wHh, Tensor? bHh)
    {
        var hGates = Functional.Linear(h, wHh, bHh);
        var xs = xGates.Chunk(3, -1);
        var hs = hGates.Chunk(3, -1);
        var r = xs[0].Add(hs[0]).Sigmoid();
        var z = xs[1].Add(hs[1]).Sigmoid();
        var n = xs[2].Add(r.Mul(hs[2])).Tanh();
        // h' = (1 - z)·n + z·h
        return n.Add(z.Mul(h.Sub(n)));
    }
}

/// <summary>Multi-layer long short-term memory RNN (torch.nn.LSTM), gate order i, f, g, o.</summary>
public sealed class LSTM : RecurrentBase
{
    public LSTM(int inputSize, int hiddenSize, int numLayers = 1, bool bias = true, bool batchFirst = false, double dropout = 0,
        bool bidirectional = false, DType dtype = DType.Float32)
        : base(4, inputSize, hiddenSize, numLayers, bias, batchFirst, dropout, bidirectional, dtype) { }

    /// <param name="input">(T, B, in), (B, T, in) when batch-first, or unbatched (T, in)</param>
    /// <param name="state">optional (h0, c0), each (L·D, B, H)</param>
    /// <returns>output (T, B, D·H) (batch-first: (B, T, D·H)) and (h_n, c_n), each (L·D, B, H)</returns>
    public (Tensor output, (Tensor h, Tensor c) state) Forward(Tensor input, (Tensor h, Tensor c)? state)
    {
        var x = ToSequenceFirst(input, out bool unbatched);
        int batch = x.Size(1);
        var h0 = CheckState(state?.h, batch, unbatched, x.DType, "h0");
        var c0 = CheckState(state?.c, batch, unbatched, x.DType, "c0");
        var (output, finals) = RunLayers(x, [h0, c0], (xg, s, ci) =>
        {
            var (h, c) = LstmStep(xg, s[0], s[1], cells[ci].wHh, cells[ci].bHh);
            return [h, c];
        });
        if (unbatched) return (FromSequenceFirst(output, true), (finals[0].Squeeze(1), finals[1].Squeeze(1)));
        return (FromSequenceFirst(output, false), (finals[0], finals[1]));
    }

    public override Tensor Forward(Tensor input) => Forward(input, null).output;
}

/// <summary>Multi-layer gated recurrent unit RNN (torch.nn.GRU), gate order r, z, n.</summary>
public sealed class GRU : RecurrentBase
{
    public GRU(int inputSize, int hiddenSize, int numLayers = 1, bool bias = true, bool batchFirst = false, double dropout = 0,
        bool bidirectional = false, DType dtype = DType.Float32)
        : base(3, inputSize, hiddenSize, numLayers, bias, batchFirst, dropout, bidirectional, dtype) { }

    /// <param name="input">(T, B, in), (B, T, in) when batch-first, or unbatched (T, in)</param>
    /// <param name="h0">optional (L·D, B, H)</param>
    /// <returns>output (T, B, D·H) (batch-first: (B, T, D·H)) and h_n (L·D, B, H)</returns>
    public (Tensor output, Tensor h) Forward(Tensor input, Tensor? h0)
    {
        var x = ToSequenceFirst(input, out bool unbatched);
        var h = CheckState(h0, x.Size(1), unbatched, x.DType, "h0");
        var (output, finals) = RunLayers(x, [h], (xg, s, ci) => [GruStep(xg, s[0], cells[ci].wHh, cells[ci].bHh)]);
        return (FromSequenceFirst(output, unbatched), unbatched ? finals[0].Squeeze(1) : finals[0]);
    }

    public override Tensor Forward(Tensor input) => Forward(input, null).output;
}

/// <summary>A single LSTM step (torch.nn.LSTMCell): weight_ih [4H, in], weight_hh [4H, H], bias_ih, bias_hh.</summary>
public sealed class LSTMCell : Module
{
    public Tensor WeightIh { get; }
    public Tensor WeightHh { get; }
    public Tensor? BiasIh { get; }
    public Tensor? BiasHh { get; }
    public int HiddenSize { get; }

    public LSTMCell(int inputSize, int hiddenSize, bool bias = true, DType dtype = DType.Float32)
    {
        HiddenSize = hiddenSize;
        (WeightIh, WeightHh, BiasIh, BiasHh) = CellParams.Register(this, RegisterParameter, 4, inputSize, hiddenSize, bias, dtype);
    }

    /// <param name="input">(B, in) or (in)</param>
    /// <param name="state">optional (h, c), each (B, H) or (H)</param>
    public (Tensor h, Tensor c) Forward(Tensor input, (Tensor h, Tensor c)? state)
    {
        bool unbatched = input.Dim == 1;
        var x = unbatched ? input.Unsqueeze(0) : input;
        var h = state?.h ?? Tensor.Zeros([x.Size(0), HiddenSize], x.DType);
        var c = state?.c ?? Tensor.Zeros([x.Size(0), HiddenSize], x.DType);
        if (unbatched && state is not null) { h = h.Unsqueeze(0); c = c.Unsqueeze(0); }
        var (h2, c2) = RecurrentBase.LstmStep(Functional.Linear(x, WeightIh, BiasIh), h, c, WeightHh, BiasHh);
        return unbatched ? (h2.Squeeze(0), c2.Squeeze(0)) : (h2, c2);
    }

    public override Tensor Forward(Tensor input) => Forward(input, null).h;
}

/// <summary>A single GRU step (torch.nn.GRUCell): weight_ih [3H, in], weight_hh [3H, H], bias_ih, bias_hh.</summary>
public sealed class GRUCell : Module
{
    public Tensor WeightIh { get; }
    public Tensor WeightHh { get; }
    public Tensor? BiasIh { get; }
    public Tensor? BiasHh { get; }
    public int HiddenSize { get; }

    public GRUCell(int inputSize, int hiddenSize, bool bias = true, DType dtype = DType.Float32)
    {
        HiddenSize = hiddenSize;
        (WeightIh, WeightHh, BiasIh, BiasHh) = CellParams.Register(this, RegisterParameter, 3, inputSize, hiddenSize, bias, dtype);
    }

    /// <param name="input">(B, in) or (in)</param>
    /// <param name="h">optional (B, H) or (H)</param>
    public Tensor Forward(Tensor input, Tensor? h)
    {
        bool unbatched = input.Dim == 1;
        var x = unbatched ? input.Unsqueeze(0) : input;
        var h0 = h is null ? Tensor.Zeros([x.Size(0), HiddenSize], x.DType) : unbatched ? h.Unsqueeze(0) : h;
        var h1 = RecurrentBase.GruStep(Functional.Linear(x, WeightIh, BiasIh), h0, WeightHh, BiasHh);
        return unbatched ? h1.Squeeze(0) : h1;
    }

    public override Tensor Forward(Tensor input) => Forward(input, null);
}

static class CellParams
{
    public static (Tensor, Tensor, Tensor?, Tensor?) Register(Module owner, Func<string, Tensor, Tensor> register, int gates, int inputSize, int hiddenSize, bool bias, DType dtype)
    {
        if (inputSize <= 0 || hiddenSize <= 0) throw new NablaException($"{owner.GetType().Name}: input_size and hidden_size must be positive, got {inputSize} and {hiddenSize}");
        double bound = 1 / Math.Sqrt(hiddenSize);
        var wIh = Init.Uniform(register("weight_ih", Tensor.Zeros([gates * hiddenSize, inputSize], dtype)), -bound, bound);
        var wHh = Init.Uniform(register("weight_hh", Tensor.Zeros([gates * hiddenSize, hiddenSize], dtype)), -bound, bound);
        if (!bias) return (wIh, wHh, null, null);
        var bIh = Init.Uniform(register("bias_ih", Tensor.Zeros([gates * hiddenSize], dtype)), -bound, bound);
        var bHh = Init.Uniform(register("bias_hh", Tensor.Zeros([gates * hiddenSize], dtype)), -bound, bound);
        return (wIh, wHh, bIh, bHh);
    }
}
