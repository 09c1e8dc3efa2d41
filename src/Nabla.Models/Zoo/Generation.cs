namespace Nabla.Models.Zoo;

/// <summary>A decoder-only language model that the zoo's <see cref="TextGeneration"/> can drive.</summary>
public interface ICausalLanguageModel
{
    int VocabSize { get; }

    /// <summary>The end-of-sequence token ids from the config (may be empty).</summary>
    IReadOnlyList<long> EosTokenIds { get; }

    /// <summary>An empty cache with one slot per attention layer.</summary>
    KVCache CreateCache();

    /// <summary>
    /// Logits (B, T, V) for input_ids (B, T). With a cache, the ids continue the cached positions and their
    /// keys/values are appended to it.
    /// </summary>
    Tensor Forward(Tensor inputIds, KVCache? cache);
}

/// <summary>Decoding settings, as in transformers' GenerationConfig.</summary>
public sealed record GenerationOptions
{
    public int MaxNewTokens { get; init; } = 20;

    /// <summary>False: greedy (argmax). True: sample from the temperature / top-k / top-p filtered distribution.</summary>
    public bool DoSample { get; init; }

    public double Temperature { get; init; } = 1.0;

    /// <summary>Keep only the k most likely tokens; 0 disables.</summary>
    public int TopK { get; init; }

    /// <summary>Keep the smallest set of most likely tokens whose probability reaches p; 1 disables.</summary>
    public double TopP { get; init; } = 1.0;

    /// <summary>The random source for sampling; a new one from <see cref="Seed"/> (or the default generator) when null.</summary>
    public Generator? Generator { get; init; }

    public ulong? Seed { get; init; }

    /// <summary>Stop tokens; the model's own EOS ids when null. A finished row is padded with its EOS id.</summary>
    public IReadOnlyList<long>? EosTokenIds { get; init; }

    /// <summary>Reuse keys/values of earlier positions (the result is the same; only the cost differs).</summary>
    public bool UseCache { get; init; } = true;

    /// <summary>Called with each step's new tokens (B), e.g. to stream text.</summary>
    public Action<long[]>? OnStep { get; init; }

    internal void Validate()
    {
        if (MaxNewTokens < 0) throw new ArgumentOutOfRangeException(nameof(MaxNewTokens), $"generate: max_new_tokens must be >= 0, got {MaxNewTokens}");
        if (DoSample && !(Temperature > 0)) throw new ArgumentOutOfRangeException(nameof(Temperature), $"generate: temperature must be > 0 when sampling, got {Temperature}");
        if (TopK < 0) throw new ArgumentOutOfRangeException(nameof(TopK), $"generate: top_k must be >= 0, got {TopK}");
        if (!(TopP > 0 && TopP <= 1)) throw new ArgumentOutOfRangeException(nameof(TopP), $"generate: top_p must be in (0, 1], got {TopP}");
    }
}

/// <summary>Greedy decoding and temperature / top-k / top-p sampling for any <see cref="ICausalLanguageModel"/>.</summary>
public static class TextGeneration
{
    /// <summary>
    /// Extends every row of <paramref name="inputIds"/> (B, T) by up to <see cref="GenerationOptions.MaxNewTokens"/>
    /// tokens and returns (B, T + n) int64, prompt included, like transformers' generate. Runs without autograd.
    /// </summary>
    public static Tensor Generate(ICausalLanguageModel model, Tensor inputIds, GenerationOptions? options = null)
    {
        var o = options ?? new GenerationOptions();
        o.Validate();
        ZooOps.CheckIds(inputIds, model.VocabSize, "generate");
        if (inputIds.Size(1) == 0) throw new ArgumentException("generate: the prompt must hold at least one token", nameof(inputIds));
        var gen = o.Generator ?? (o.Seed is ulong s ? new Generator(s) : Generator.Default);
        var eos = o.EosTokenIds ?? model.EosTokenIds;
        int b = inputIds.Size(0);
        var rows = new List<long>[b];
        var all = inputIds.To(DType.Int64).ToArray<long>();
        int t0 = inputIds.Size(1);
        for (int i = 0; i < b; i++) rows[i] = all.Skip(i * t0).Take(t0).ToList();
        var finished = new bool[b];

        using var _ = GradMode.NoGrad();
        var cache = o.UseCache ? model.CreateCache() : null;
        var next = inputIds.To(DType.Int64);
        for (int step = 0; step < o.MaxNewTokens; step++)
        {
            var logits = model.Forward(next, cache);
            var last = logits.Select(1, logits.Size(1) - 1).Contiguous().To(DType.Float32).ToArray<float>(); // (B, V)
            int v = logits.Size(2);
            var chosen = new long[b];
            for (int i = 0; i < b; i++)
            {
                if (finished[i]) { chosen[i] = eos.Count > 0 ? eos[0] : 0; continue; }
                var row = new ReadOnlySpan<float>(last, i * v, v);
                chosen[i] = o.DoSample ? Sample(row, o.Temperature, o.TopK, o.TopP, gen) : ArgMax(row);
                if (eos.Contains(chosen[i])) finished[i] = true;
            }
            for (int i = 0; i < b; i++) rows[i].Add(chosen[i]);
            o.OnStep?.Invoke(chosen);
            if (finished.All(f => f)) break;
            next = cache is null
                ? Tensor.FromArray(rows.SelectMany(r => r).ToArray(), b, rows[0].Count)
                : Tensor.FromArray(chosen, b, 1);
        }
        return Tensor.FromArray(rows.SelectMany(r => r).ToArray(), b, rows[0].Count);
    }

    /// <summary>The index of the largest logit (the first one on ties, as torch.argmax).</summary>
    public static long ArgMax(ReadOnlySpan<float> logits)
    {
        int best = 0;
        for (int j = 1; j < logits.Length; j++)
            if (logits[j] > logits[best] || float.IsNaN(logits[j]) && !float.IsNaN(logits[best])) best = j;
        return best;
    }

    /// <summary>
    /// The probabilities that sampling draws from, after transformers' warpers in their order: temperature,
    /// then top-k, then top-p (tokens whose ascending cumulative probability is ≤ 1 - p are removed; the most likely
    /// token always stays). Removed tokens get probability 0.
    /// </summary>
    public static double[] SamplingDistribution(ReadOnlySpan<float> logits, double temperature = 1, int topK = 0, double topP = 1)
    {
        int n = logits.Length;
        var z = new double[n];
        for (int j = 0; j < n; j++) z[j] = logits[j] / temperature;
        var keep = new bool[n];
        Array.Fill(keep, true);
        var order = Enumerable.Range(0, n).OrderByDescending(j => z[j]).ThenBy(j => j).ToArray();
        if (topK > 0 && topK < n)
        {
            // NOTE: like TopKLogitsWarper, every token tied with the k-th logit stays.
            double kth = z[order[topK - 1]];
            for (int j = 0; j < n; j++) if (z[j] < kth) keep[j] = false;
        }
        if (topP < 1)
        {
            var p = Softmax(z, keep);
            double cum = 0;
            for (int r = n - 1; r >= 1; r--) // ascending probability, the top token (r = 0) never removed
            {
                int j = order[r];
                cum += p[j];
                if (cum <= 1 - topP) keep[j] = false;
            }
        }
        return Softmax(z, keep);
    }

    /// <summary>Draws one token from <see cref="SamplingDistribution"/> with <paramref name="generator"/>.</summary>
    public static long Sample(ReadOnlySpan<float> logits, double temperature, int topK, double topP, Generator generator)
    {
        var p = SamplingDistribution(logits, temperature, topK, topP);
        double u = generator.NextDouble(), cum = 0;
        int lastKept = -1;
        for (int j = 0; j < p.Length; j++)
        {
            if (p[j] <= 0) continue;
            lastKept = j;
            cum += p[j];
            if (u < cum) return j;
        }
        return lastKept; // u fell in the rounding gap at the top
    }

    static double[] Softmax(double[] z, bool[] keep)
    {
        double max = double.NegativeInfinity;
        for (int j = 0; j < z.Length; j++) if (keep[j] && z[j] > max) max = z[j];
        var p = new double[z.Length];
        double sum = 0;
        for (int j = 0; j < z.Length; j++)
            if (keep[j]) { p[j] = Math.Exp(z[j] - max); sum += p[j]; }
        for (int j = 0; j < z.Length; j++) p[j] /= sum;
        return p;
    }
}
