using Nabla.Models.Zoo;
using Xunit;

namespace Nabla.Models.Tests.Zoo;

public class GenerationTests
{
    static readonly float[] Logits = [1.0f, 3.0f, 2.0f, 0.5f, 2.5f, -1.0f];

    [Fact]
    public void Argmax_takes_the_first_of_ties()
    {
        Assert.Equal(1, TextGeneration.ArgMax([0f, 5f, 5f, 1f]));
        Assert.Equal(1, TextGeneration.ArgMax(Logits));
    }

    [Fact]
    public void Temperature_scales_logits_before_softmax()
    {
        var p = TextGeneration.SamplingDistribution(Logits, temperature: 0.5);
        double z = Logits.Sum(l => Math.Exp(l / 0.5));
        for (int j = 0; j < Logits.Length; j++) Assert.Equal(Math.Exp(Logits[j] / 0.5) / z, p[j], 12);
    }

    [Fact]
    public void Top_k_keeps_the_k_most_likely()
    {
        var p = TextGeneration.SamplingDistribution(Logits, topK: 2);
        Assert.Equal([false, true, false, false, true, false], p.Select(v => v > 0).ToArray());
        Assert.Equal(1.0, p.Sum(), 12);
        Assert.Equal(Math.Exp(3) / (Math.Exp(3) + Math.Exp(2.5)), p[1], 12);
    }

    [Fact]
    public void Top_p_keeps_the_smallest_nucleus_reaching_p()
    {
        var full = TextGeneration.SamplingDistribution(Logits);
        // descending: 1 (3.0), 4 (2.5), 2 (2.0), 0 (1.0), 3 (0.5), 5 (-1.0)
        double p1 = full[1], p14 = full[1] + full[4];
        var onlyTop = TextGeneration.SamplingDistribution(Logits, topP: p1 * 0.9);
        Assert.Equal(1, onlyTop.Count(v => v > 0));
        Assert.Equal(1.0, onlyTop[1]);
        var two = TextGeneration.SamplingDistribution(Logits, topP: (p1 + p14) / 2);
        Assert.Equal([false, true, false, false, true, false], two.Select(v => v > 0).ToArray());
        Assert.Equal(full.Length, TextGeneration.SamplingDistribution(Logits, topP: 1.0).Count(v => v > 0));
    }

    [Fact]
    public void Sampling_frequencies_follow_the_distribution()
    {
        var g = new Generator(7);
        var counts = new int[Logits.Length];
        const int n = 20000;
        for (int i = 0; i < n; i++) counts[TextGeneration.Sample(Logits, 1.0, 0, 1.0, g)]++;
        var p = TextGeneration.SamplingDistribution(Logits);
        for (int j = 0; j < p.Length; j++) Assert.InRange(counts[j] / (double)n, p[j] - 0.015, p[j] + 0.015);
    }

    [Fact]
    public void Seeded_sampling_is_reproducible_and_uses_the_cache_transparently()
    {
        var model = Gpt2LMHeadModel.FromPretrained(ZooFixture.Dir("gpt2"));
        var prompt = ZooFixture.Expected("gpt2")["prompt_ids"];
        var o = new GenerationOptions { MaxNewTokens = 10, DoSample = true, Temperature = 1.3, TopK = 20, TopP = 0.95, Seed = 42, EosTokenIds = [] };
        var a = ZooFixture.Longs(model.Generate(prompt, o));
        var b = ZooFixture.Longs(model.Generate(prompt, o));
        var noCache = ZooFixture.Longs(model.Generate(prompt, o with { UseCache = false }));
        var other = ZooFixture.Longs(model.Generate(prompt, o with { Seed = 43 }));
        Assert.Equal(15, a.Length);
        Assert.Equal(a, b);
        Assert.Equal(a, noCache);
        Assert.NotEqual(a, other);
        Assert.Equal(ZooFixture.Longs(prompt), a.Take(5).ToArray());
    }

    [Fact]
    public void Top_k_1_sampling_equals_greedy()
    {
        var model = LlamaForCausalLM.FromPretrained(ZooFixture.Dir("llama"));
        var x = ZooFixture.Expected("llama");
        var sampled = model.Generate(x["prompt_ids"], new GenerationOptions { MaxNewTokens = 8, DoSample = true, TopK = 1, Seed = 1, EosTokenIds = [] });
        Assert.Equal(ZooFixture.Longs(x["greedy_ids"]), ZooFixture.Longs(sampled));
    }

    [Fact]
    public void Batched_generation_equals_one_row_at_a_time()
    {
        var model = LlamaForCausalLM.FromPretrained(ZooFixture.Dir("llama"));
        var ids = ZooFixture.Expected("llama")["input_ids"]; // (2, 7)
        var o = new GenerationOptions { MaxNewTokens = 5, EosTokenIds = [] };
        var both = model.Generate(ids, o);
        for (int r = 0; r < 2; r++)
            Assert.Equal(ZooFixture.Longs(model.Generate(ids.Narrow(0, r, 1), o)), ZooFixture.Longs(both.Narrow(0, r, 1)));
    }

    [Fact]
    public void Generation_stops_at_eos_and_pads_finished_rows()
    {
        var model = Gpt2LMHeadModel.FromPretrained(ZooFixture.Dir("gpt2"));
        var x = ZooFixture.Expected("gpt2");
        var greedy = ZooFixture.Longs(x["greedy_ids"]);
        long stop = greedy[5 + 2]; // the third generated token
        var ids = ZooFixture.Longs(model.Generate(x["prompt_ids"], new GenerationOptions { MaxNewTokens = 8, EosTokenIds = [stop] }));
        int firstStop = Array.IndexOf(greedy, stop, 5);
        Assert.Equal(greedy.Take(firstStop + 1).ToArray(), ids);
    }

    [Fact]
    public void Bad_options_and_inputs_throw_with_names()
    {
        var model = Gpt2LMHeadModel.FromPretrained(ZooFixture.Dir("gpt2"));
        var prompt = ZooFixture.Expected("gpt2")["prompt_ids"];
        Assert.Contains("top_p", Assert.Throws<ArgumentOutOfRangeException>(() => model.Generate(prompt, new GenerationOptions { DoSample = true, TopP = 0 })).Message);
        Assert.Contains("temperature", Assert.Throws<ArgumentOutOfRangeException>(() => model.Generate(prompt, new GenerationOptions { DoSample = true, Temperature = 0 })).Message);
        Assert.Contains("[0, 100)", Assert.Throws<ArgumentOutOfRangeException>(() => model.Forward(Tensor.FromArray(new long[] { 5, 100 }, 1, 2), null)).Message);
        Assert.Contains("n_positions", Assert.Throws<ArgumentOutOfRangeException>(() => model.Generate(prompt, new GenerationOptions { MaxNewTokens = 100, EosTokenIds = [] })).Message);
    }
}
