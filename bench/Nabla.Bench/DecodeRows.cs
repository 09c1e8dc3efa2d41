using Nabla.Models.Zoo;
using Torch = TorchSharp.torch;
using TTensor = TorchSharp.torch.Tensor;

namespace Nabla.Bench;

/// <summary>
/// Autoregressive decoding of a GPT-2-small-sized model (124M parameters: 12 layers, 12 heads, 768 hidden, vocab
/// 50257, random weights) with a key/value cache: one step is a whole greedy generation, an 8-token prompt then
/// 32 new tokens. Nabla runs the zoo's <see cref="Gpt2LMHeadModel"/> through <see cref="TextGeneration.Generate"/>;
/// TorchSharp runs the same architecture written with its nn modules (Embedding, LayerNorm, Linear) and the same
/// weights, copied over; before timing the child checks that both produce the same 32 tokens.
/// </summary>
static class DecodeRows
{
    public const int PromptTokens = 8, NewTokens = 32;

    static object? sink;

    public static IEnumerable<Row> All()
    {
        yield return new Row("gpt2-decode", $"GPT-2-small (124M) greedy decode with KV cache, {PromptTokens}-token prompt + {NewTokens} new tokens (time per generation)",
            Unit.MsPerStep, 0, Candidates());
    }

    static IReadOnlyList<Candidate> Candidates()
    {
        // NOTE: the model is built lazily by the first setup and shared, so the TorchSharp copy gets the same weights.
        Gpt2LMHeadModel? nabla = null;
        long[]? prompt = null;
        long[]? nablaTokens = null;
        Gpt2LMHeadModel Model()
        {
            if (nabla is null)
            {
                Tensor.ManualSeed(1);
                nabla = new Gpt2LMHeadModel(new Gpt2Config());
                nabla.Eval();
                var rng = new Random(1);
                prompt = Enumerable.Range(0, PromptTokens).Select(_ => (long)rng.Next(50257)).ToArray();
            }
            return nabla;
        }
        var options = new GenerationOptions { MaxNewTokens = NewTokens, EosTokenIds = [] };
        return
        [
            new(Rows.FwNabla, () =>
            {
                var model = Model();
                var ids = Tensor.FromArray(prompt!, 1, PromptTokens);
                long[] Run() => TextGeneration.Generate(model, ids, options).ToArray<long>()[PromptTokens..];
                nablaTokens = Run();
                return () => sink = Run();
            }),
            new(Rows.FwTorch, () =>
            {
                var torchModel = new TorchGpt2(Model());
                long[] Run() => torchModel.Generate(prompt!, NewTokens);
                var tokens = Run();
                nablaTokens ??= TextGeneration.Generate(Model(), Tensor.FromArray(prompt!, 1, PromptTokens), options).ToArray<long>()[PromptTokens..];
                if (!tokens.SequenceEqual(nablaTokens))
                    throw new InvalidOperationException($"gpt2-decode: TorchSharp generated [{string.Join(", ", tokens)}], Nabla [{string.Join(", ", nablaTokens)}]");
                Console.Error.WriteLine($"  check: gpt2-decode, TorchSharp and Nabla generate the same {NewTokens} tokens");
                return () => sink = Run();
            }),
        ];
    }

    /// <summary>GPT-2 (pre-LayerNorm blocks, fused QKV, tanh GELU, tied LM head) in TorchSharp nn modules, with a KV cache.</summary>
    sealed class TorchGpt2
    {
        const int Layers = 12, Heads = 12, Hidden = 768, Vocab = 50257, Positions = 1024;
        readonly TorchSharp.Modules.Embedding wte, wpe;
        readonly TorchSharp.Modules.LayerNorm lnF;
        readonly Block[] blocks;

        sealed record Block(TorchSharp.Modules.LayerNorm Ln1, TorchSharp.Modules.Linear CAttn, TorchSharp.Modules.Linear AttnProj,
            TorchSharp.Modules.LayerNorm Ln2, TorchSharp.Modules.Linear CFc, TorchSharp.Modules.Linear MlpProj);

        public TorchGpt2(Gpt2LMHeadModel source)
        {
            var sd = source.StateDict();
            TTensor T(string name, bool transpose = false)
            {
                var t = sd[name].Contiguous();
                var tt = Torch.tensor(t.ToArray<float>(), t.Shape.Select(d => (long)d).ToArray());
                return transpose ? tt.t().contiguous() : tt;
            }
            using var _ = Torch.no_grad();
            void Set(TorchSharp.Modules.Parameter p, TTensor value) => p.copy_(value);
            wte = Torch.nn.Embedding(Vocab, Hidden);
            wpe = Torch.nn.Embedding(Positions, Hidden);
            Set(wte.weight!, T("transformer.wte.weight"));
            Set(wpe.weight!, T("transformer.wpe.weight"));
            lnF = Torch.nn.LayerNorm(Hidden, 1e-5);
            Set(lnF.weight!, T("transformer.ln_f.weight"));
            Set(lnF.bias!, T("transformer.ln_f.bias"));
            blocks = new Block[Layers];
            for (int i = 0; i < Layers; i++)
            {
                string p = $"transformer.h.{i}.";
                var b = new Block(Torch.nn.LayerNorm(Hidden, 1e-5), Torch.nn.Linear(Hidden, 3 * Hidden), Torch.nn.Linear(Hidden, Hidden),
                    Torch.nn.LayerNorm(Hidden, 1e-5), Torch.nn.Linear(Hidden, 4 * Hidden), Torch.nn.Linear(4 * Hidden, Hidden));
                // NOTE: GPT-2's Conv1D stores weights (in, out); nn.Linear wants (out, in).
                Set(b.Ln1.weight!, T(p + "ln_1.weight")); Set(b.Ln1.bias!, T(p + "ln_1.bias"));
                Set(b.CAttn.weight!, T(p + "attn.c_attn.weight", true)); Set(b.CAttn.bias!, T(p + "attn.c_attn.bias"));
                Set(b.AttnProj.weight!, T(p + "attn.c_proj.weight", true)); Set(b.AttnProj.bias!, T(p + "attn.c_proj.bias"));
                Set(b.Ln2.weight!, T(p + "ln_2.weight")); Set(b.Ln2.bias!, T(p + "ln_2.bias"));
                Set(b.CFc.weight!, T(p + "mlp.c_fc.weight", true)); Set(b.CFc.bias!, T(p + "mlp.c_fc.bias"));
                Set(b.MlpProj.weight!, T(p + "mlp.c_proj.weight", true)); Set(b.MlpProj.bias!, T(p + "mlp.c_proj.bias"));
                blocks[i] = b;
            }
            foreach (var m in new TorchSharp.torch.nn.Module[] { wte, wpe, lnF }.Concat(blocks.SelectMany(b => new TorchSharp.torch.nn.Module[] { b.Ln1, b.CAttn, b.AttnProj, b.Ln2, b.CFc, b.MlpProj })))
                m.eval();
        }

        /// <summary>Greedy: prefill the prompt, then one position per step against the cached keys and values.</summary>
        public long[] Generate(long[] prompt, int newTokens)
        {
            using var noGrad = Torch.no_grad();
            using var scope = Torch.NewDisposeScope();
            var keys = new TTensor?[Layers];
            var values = new TTensor?[Layers];
            var result = new long[newTokens];
            var ids = Torch.tensor(prompt, [1, prompt.Length]);
            int past = 0;
            for (int step = 0; step < newTokens; step++)
            {
                using var stepScope = Torch.NewDisposeScope();
                var logits = Forward(ids, past, keys, values);
                long next = logits[0, -1].argmax().item<long>();
                result[step] = next;
                past += (int)ids.shape[1];
                for (int l = 0; l < Layers; l++)
                {
                    stepScope.MoveToOuter(keys[l]!);
                    stepScope.MoveToOuter(values[l]!);
                }
                ids = Torch.tensor(new[] { next }, [1, 1]);
                stepScope.MoveToOuter(ids);
            }
            return result;
        }

        TTensor Forward(TTensor ids, int past, TTensor?[] keys, TTensor?[] values)
        {
            long t = ids.shape[1];
            var pos = Torch.arange(past, past + t, Torch.int64).unsqueeze(0);
            var x = wte.forward(ids) + wpe.forward(pos);
            TTensor? mask = t > 1 ? Torch.full(t, t, float.NegativeInfinity).triu(1) : null;
            for (int l = 0; l < Layers; l++)
            {
                var b = blocks[l];
                var qkv = b.CAttn.forward(b.Ln1.forward(x)).split(Hidden, -1);
                TTensor Heads_(TTensor y) => y.view(1, t, Heads, Hidden / Heads).transpose(1, 2);
                var q = Heads_(qkv[0]);
                var k = Heads_(qkv[1]);
                var v = Heads_(qkv[2]);
                // NOTE: the previous step's entries (moved out of that step's scope) are freed as soon as they are replaced.
                var (pk, pv) = (keys[l], values[l]);
                keys[l] = pk is null ? k : Torch.cat([pk, k], 2);
                values[l] = pv is null ? v : Torch.cat([pv, v], 2);
                pk?.Dispose();
                pv?.Dispose();
                var scores = q.matmul(keys[l]!.transpose(-1, -2)) / Math.Sqrt(Hidden / Heads);
                if (mask is not null) scores = scores + mask;
                var attn = Torch.nn.functional.softmax(scores, -1).matmul(values[l]!).transpose(1, 2).reshape(1, t, Hidden);
                x = x + b.AttnProj.forward(attn);
                var h = b.CFc.forward(b.Ln2.forward(x));
                x = x + b.MlpProj.forward(GeluTanh(h));
            }
            x = lnF.forward(x);
            return x.matmul(wte.weight!.t()); // tied LM head
        }

        static TTensor GeluTanh(TTensor x) => 0.5 * x * (1 + ((x + 0.044715 * x.pow(3)) * Math.Sqrt(2 / Math.PI)).tanh());
    }
}
