using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Nabla.Models.Tests.Hub;
using Nabla.Models.Tests.Zoo;
using Nabla.Models.Zoo;
using Nabla.NN;
using Nabla.Vision;
using SkiaSharp;
using Xunit;

namespace Nabla.Models.Tests.Cli;

/// <summary>Runs the real `nabla` entry point (Nabla.Cli.dll from the build output) as a child process, never touching the network.</summary>
public static class NablaProcess
{
    public sealed record Result(int ExitCode, string Stdout, string Stderr)
    {
        public string[] Lines => Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.TrimEnd('\r')).ToArray();
        public JsonElement LastJson => JsonDocument.Parse(Lines[^1]).RootElement;
        public override string ToString() => $"exit {ExitCode}\n--- stdout\n{Stdout}\n--- stderr\n{Stderr}";
    }

    static string Dll => Path.Combine(AppContext.BaseDirectory, "Nabla.Cli.dll");

    static string DotnetHost()
    {
        var host = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH");
        if (!string.IsNullOrEmpty(host) && File.Exists(host)) return host;
        var self = Environment.ProcessPath;
        return self is not null && Path.GetFileNameWithoutExtension(self) == "dotnet" ? self : "dotnet";
    }

    public static Result Run(string workDir, params string[] args) => Run(workDir, null, args);

    /// <summary>Runs with <paramref name="env"/> on top of the offline defaults (a null value removes the variable).</summary>
    public static Result Run(string workDir, IReadOnlyDictionary<string, string?>? env, params string[] args)
    {
        var psi = new ProcessStartInfo(DotnetHost())
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            StandardOutputEncoding = Encoding.UTF8,
            WorkingDirectory = workDir,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add("exec");
        psi.ArgumentList.Add(Dll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["HF_HUB_OFFLINE"] = "1";
        psi.Environment["HF_HOME"] = Path.Combine(workDir, "hf-home");
        psi.Environment["NABLA_OFFLINE"] = "1";
        foreach (var (k, v) in env ?? new Dictionary<string, string?>())
        {
            if (v is null) psi.Environment.Remove(k);
            else psi.Environment[k] = v;
        }
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(180_000))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"nabla {string.Join(' ', args)} did not finish in 180 s");
        }
        p.WaitForExit();
        return new Result(p.ExitCode, stdout.Result, stderr.Result);
    }
}

/// <summary>A temporary folder with copies of the zoo fixtures that the CLI tests need, each given a tiny tokenizer.json.</summary>
public sealed class ModelCliFixture : IDisposable
{
    public string Root { get; } = Path.Combine(Path.GetTempPath(), "nabla-cli-models-" + Guid.NewGuid().ToString("N"));

    public ModelCliFixture()
    {
        Directory.CreateDirectory(Root);
        foreach (var name in new[] { "gpt2", "llama" })
        {
            var dst = Path.Combine(Root, name);
            Directory.CreateDirectory(dst);
            foreach (var f in new[] { "config.json", "model.safetensors" }) File.Copy(Path.Combine(ZooFixture.Dir(name), f), Path.Combine(dst, f));
            File.WriteAllText(Path.Combine(dst, "tokenizer.json"), TinyTokenizerJson());
        }
        WritePng(Path.Combine(Root, "image.png"), 24, 20);
    }

    public string Dir(string name) => Path.Combine(Root, name);

    public NablaProcess.Result Run(params string[] args) => NablaProcess.Run(Root, args);

    /// <summary>
    /// A GPT-2 style byte-level BPE with the fixtures' vocabulary size (100): ids 0..94 are the bytes 0x20..0x7E
    /// (space as 'Ġ'), 95..97 three merges ("he", "Ġt", "Ġthe"), 98 and 99 special tokens (the gpt2 fixture's
    /// bos_token_id and eos_token_id).
    /// </summary>
    public static string TinyTokenizerJson()
    {
        var vocab = new Dictionary<string, int>();
        for (int b = 0x20; b <= 0x7E; b++) vocab[b == 0x20 ? "\u0120" : ((char)b).ToString()] = b - 0x20;
        vocab["he"] = 95;
        vocab["\u0120t"] = 96;
        vocab["\u0120the"] = 97;
        vocab["<|startoftext|>"] = 98;
        vocab["<|endoftext|>"] = 99;
        var doc = new Dictionary<string, object?>
        {
            ["version"] = "1.0",
            ["added_tokens"] = new object[]
            {
                new Dictionary<string, object> { ["id"] = 98, ["content"] = "<|startoftext|>", ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false, ["normalized"] = false, ["special"] = true },
                new Dictionary<string, object> { ["id"] = 99, ["content"] = "<|endoftext|>", ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false, ["normalized"] = false, ["special"] = true },
            },
            ["normalizer"] = null,
            ["pre_tokenizer"] = new Dictionary<string, object> { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = true },
            ["post_processor"] = null,
            ["decoder"] = new Dictionary<string, object> { ["type"] = "ByteLevel", ["add_prefix_space"] = true, ["trim_offsets"] = true, ["use_regex"] = true },
            ["model"] = new Dictionary<string, object?>
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = null, ["continuing_subword_prefix"] = "", ["end_of_word_suffix"] = "",
                ["fuse_unk"] = false, ["byte_fallback"] = false, ["vocab"] = vocab, ["merges"] = new[] { "h e", "\u0120 t", "\u0120t he" },
            },
        };
        return JsonSerializer.Serialize(doc);
    }

    /// <summary>A colour gradient PNG, not square so that classify has to resize it.</summary>
    public static void WritePng(string path, int width, int height)
    {
        using var bitmap = new SKBitmap(new SKImageInfo(width, height, SKColorType.Rgba8888, SKAlphaType.Unpremul));
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
                bitmap.SetPixel(x, y, new SKColor((byte)(x * 255 / (width - 1)), (byte)(y * 255 / (height - 1)), (byte)((x * 7 + y * 13) % 256)));
        using var image = SKImage.FromBitmap(bitmap);
        using var data = image.Encode(SKEncodedImageFormat.Png, 100);
        File.WriteAllBytes(path, data.ToArray());
    }

    public void Dispose()
    {
        try { Directory.Delete(Root, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}

public class GenerateClassifyCliTests(ModelCliFixture fx) : IClassFixture<ModelCliFixture>
{
    static ICausalLanguageModel Load(string dir) =>
        HfConfig.Load(dir).ModelType == "gpt2" ? Gpt2LMHeadModel.FromPretrained(dir) : LlamaForCausalLM.FromPretrained(dir);

    static long[] LibraryNewIds(string dir, long[] promptIds, GenerationOptions options)
    {
        var output = TextGeneration.Generate(Load(dir), Tensor.FromArray(promptIds, 1, promptIds.Length), options).ToArray<long>();
        return output.Skip(promptIds.Length).ToArray();
    }

    [Theory]
    [InlineData("generate", "--max-new-tokens")]
    [InlineData("classify", "--image")]
    public void Help_lists_the_options(string verb, string option)
    {
        var r = fx.Run(verb, "--help");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains(option, r.Stdout);
        var top = fx.Run("--help");
        Assert.Contains(verb, top.Stdout);
    }

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    public void Greedy_generate_matches_the_library(string name)
    {
        const string prompt = "the cat sat on the";
        var r = fx.Run("generate", "--model", fx.Dir(name), "--prompt", prompt, "--max-new-tokens", "12", "--json");
        Assert.True(r.ExitCode == 0, r.ToString());
        var json = r.LastJson;
        var promptIds = json.GetProperty("prompt_ids").EnumerateArray().Select(e => e.GetInt64()).ToArray();
        var newIds = json.GetProperty("new_ids").EnumerateArray().Select(e => e.GetInt64()).ToArray();

        var tokenizer = Models.Tokenizers.FromPretrained(fx.Dir(name));
        Assert.Equal(tokenizer.EncodeToIds(prompt).Select(i => (long)i), promptIds);
        Assert.Contains(97L, promptIds); // the merges apply: "Ġthe"
        var expected = LibraryNewIds(fx.Dir(name), promptIds, new GenerationOptions { MaxNewTokens = 12 });
        Assert.Equal(expected, newIds);
        Assert.NotEmpty(newIds);

        // The streamed text: the prompt, then the decoded new tokens (EOS excluded).
        var eos = Load(fx.Dir(name)).EosTokenIds;
        var text = tokenizer.Decode(newIds.Where(i => !eos.Contains(i)).Select(i => (int)i));
        Assert.Equal(text, json.GetProperty("text").GetString());
        Assert.StartsWith(prompt + text, r.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void Sampling_is_seeded_and_matches_the_library()
    {
        string[] args = ["generate", "--model", fx.Dir("gpt2"), "--prompt", "hello there", "--max-new-tokens", "10",
            "--temperature", "1.5", "--top-k", "20", "--top-p", "0.95", "--seed", "7", "--json"];
        var a = fx.Run(args);
        var b = fx.Run(args);
        Assert.True(a.ExitCode == 0, a.ToString());
        Assert.Equal(a.Lines[0], b.Lines[0]); // the streamed text
        Assert.Equal(a.LastJson.GetProperty("new_ids").GetRawText(), b.LastJson.GetProperty("new_ids").GetRawText());
        var promptIds = a.LastJson.GetProperty("prompt_ids").EnumerateArray().Select(e => e.GetInt64()).ToArray();
        var newIds = a.LastJson.GetProperty("new_ids").EnumerateArray().Select(e => e.GetInt64()).ToArray();
        var expected = LibraryNewIds(fx.Dir("gpt2"), promptIds,
            new GenerationOptions { MaxNewTokens = 10, DoSample = true, Temperature = 1.5, TopK = 20, TopP = 0.95, Seed = 7 });
        Assert.Equal(expected, newIds);
    }

    [Fact]
    public void No_cache_gives_the_same_tokens()
    {
        var cached = fx.Run("generate", "--model", fx.Dir("gpt2"), "--prompt", "abc", "--max-new-tokens", "6", "--json");
        var uncached = fx.Run("generate", "--model", fx.Dir("gpt2"), "--prompt", "abc", "--max-new-tokens", "6", "--json", "--no-cache");
        Assert.True(cached.ExitCode == 0, cached.ToString());
        Assert.True(uncached.ExitCode == 0, uncached.ToString());
        Assert.Equal(cached.LastJson.GetProperty("new_ids").GetRawText(), uncached.LastJson.GetProperty("new_ids").GetRawText());
    }

    [Fact]
    public void Generate_fetches_an_org_name_model_from_the_hub_with_only_the_files_it_needs()
    {
        const string repo = "tiny-org/tiny-gpt2", commit = "0123456789abcdef0123456789abcdef01234567";
        using var server = new FakeHubServer(Path.Combine(fx.Root, "hub-server"));
        foreach (var f in new[] { "config.json", "model.safetensors", "tokenizer.json" })
            server.AddFile(repo, commit, f, File.ReadAllBytes(Path.Combine(fx.Dir("gpt2"), f)));
        server.AddFile(repo, commit, "pytorch_model.bin", new byte[4096]);
        server.AddFile(repo, commit, "README.md", "# tiny\n"u8.ToArray());
        server.Branches[repo + "@main"] = commit;
        var env = new Dictionary<string, string?>
        {
            ["HF_HUB_OFFLINE"] = null,
            ["HF_ENDPOINT"] = server.Endpoint,
            ["HF_HOME"] = Path.Combine(fx.Root, "hub-home"),
            ["HF_TOKEN"] = null,
        };
        var r = NablaProcess.Run(fx.Root, env, "generate", "--model", repo, "--prompt", "the cat", "--max-new-tokens", "5", "--json");
        Assert.True(r.ExitCode == 0, r.ToString());
        var local = fx.Run("generate", "--model", fx.Dir("gpt2"), "--prompt", "the cat", "--max-new-tokens", "5", "--json");
        Assert.Equal(local.LastJson.GetProperty("new_ids").GetRawText(), r.LastJson.GetProperty("new_ids").GetRawText());
        var fetched = server.TakeRequests().Where(q => q.Method == "GET").Select(q => q.Path).ToList();
        Assert.Contains(fetched, p => p.EndsWith("/tokenizer.json", StringComparison.Ordinal));
        Assert.DoesNotContain(fetched, p => p.EndsWith("/pytorch_model.bin", StringComparison.Ordinal) || p.EndsWith("/README.md", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("vit")]
    [InlineData("resnet18")]
    public void Classify_prints_the_top_labels_with_the_library_probabilities(string name)
    {
        var image = Path.Combine(fx.Root, "image.png");
        var r = fx.Run("classify", "--model", ZooFixture.Dir(name), "--image", image, "--top", "3", "--json");
        Assert.True(r.ExitCode == 0, r.ToString());
        var top = r.LastJson.GetProperty("top").EnumerateArray().ToArray();
        Assert.Equal(3, top.Length);

        // The same pipeline through the library: [0, 1], bilinear resize, ImageNet normalization (the fixtures give no mean/std).
        var config = HfConfig.Load(ZooFixture.Dir(name));
        Module model = name == "vit" ? ViTForImageClassification.FromPretrained(ZooFixture.Dir(name)) : ResNet.FromPretrained(ZooFixture.Dir(name));
        int size = name == "vit" ? 16 : 224;
        var x = ImageIO.Read(image).To(DType.Float32).Div(255.0).Permute(2, 0, 1).Unsqueeze(0).Contiguous();
        x = Functional.Interpolate(x, (size, size), mode: "bilinear");
        x = x.Sub(Tensor.FromArray(new[] { 0.485f, 0.456f, 0.406f }, 1, 3, 1, 1)).Div(Tensor.FromArray(new[] { 0.229f, 0.224f, 0.225f }, 1, 3, 1, 1));
        float[] probs;
        using (GradMode.NoGrad()) probs = Functional.Softmax(model.Forward(x), -1).ToArray<float>();
        var labels = config.Labels(probs.Length);
        var order = Enumerable.Range(0, probs.Length).OrderByDescending(i => probs[i]).ThenBy(i => i).Take(3).ToArray();
        for (int k = 0; k < 3; k++)
        {
            Assert.Equal(order[k], top[k].GetProperty("id").GetInt32());
            Assert.Equal(labels[order[k]], top[k].GetProperty("label").GetString());
            Assert.Equal(probs[order[k]], top[k].GetProperty("probability").GetDouble(), 5);
        }
        if (name == "vit") Assert.StartsWith("class_", top[0].GetProperty("label").GetString());

        var table = fx.Run("classify", "--model", ZooFixture.Dir(name), "--image", image, "--top", "2");
        Assert.True(table.ExitCode == 0, table.ToString());
        Assert.Equal(2, table.Lines.Length);
        Assert.StartsWith(labels[order[0]], table.Lines[0]);
        Assert.Contains(probs[order[0]].ToString("0.0000", CultureInfo.InvariantCulture), table.Lines[0]);
    }

    [Fact]
    public void Classify_uses_the_config_mean_and_std_when_given()
    {
        var dir = Path.Combine(fx.Root, "vit-norm");
        Directory.CreateDirectory(dir);
        File.Copy(Path.Combine(ZooFixture.Dir("vit"), "model.safetensors"), Path.Combine(dir, "model.safetensors"), overwrite: true);
        File.Copy(Path.Combine(ZooFixture.Dir("vit"), "config.json"), Path.Combine(dir, "config.json"), overwrite: true);
        File.WriteAllText(Path.Combine(dir, "preprocessor_config.json"), """{"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}""");
        var image = Path.Combine(fx.Root, "image.png");
        var imagenet = fx.Run("classify", "--model", ZooFixture.Dir("vit"), "--image", image, "--top", "5", "--json");
        var half = fx.Run("classify", "--model", dir, "--image", image, "--top", "5", "--json");
        Assert.True(half.ExitCode == 0, half.ToString());

        var model = ViTForImageClassification.FromPretrained(dir);
        var x = ImageIO.Read(image).To(DType.Float32).Div(255.0).Permute(2, 0, 1).Unsqueeze(0).Contiguous();
        x = Functional.Interpolate(x, (16, 16), mode: "bilinear").Sub(0.5).Div(0.5);
        float[] probs;
        using (GradMode.NoGrad()) probs = Functional.Softmax(model.Forward(x), -1).ToArray<float>();
        foreach (var e in half.LastJson.GetProperty("top").EnumerateArray())
            Assert.Equal(probs[e.GetProperty("id").GetInt32()], e.GetProperty("probability").GetDouble(), 5);
        Assert.NotEqual(imagenet.LastJson.GetRawText(), half.LastJson.GetRawText());
    }

    [Theory]
    [InlineData("generate")]
    [InlineData("classify")]
    public void A_missing_model_folder_is_a_clear_error(string verb)
    {
        var missing = Path.Combine(fx.Root, "no-such-model");
        var r = verb == "generate"
            ? fx.Run("generate", "--model", missing, "--prompt", "hi")
            : fx.Run("classify", "--model", missing, "--image", Path.Combine(fx.Root, "image.png"));
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("model folder not found", r.Stderr);
        Assert.Contains(missing, r.Stderr);
        Assert.DoesNotContain("   at ", r.Stderr); // no stack trace
    }

    [Theory]
    [InlineData("generate", "bert")]
    [InlineData("classify", "gpt2")]
    [InlineData("generate", "vit")]
    public void An_unsupported_model_type_is_a_clear_error(string verb, string modelType)
    {
        var dir = Path.Combine(fx.Root, $"unsupported-{verb}-{modelType}");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "config.json"), $$"""{"model_type": "{{modelType}}", "vocab_size": 100}""");
        var r = verb == "generate"
            ? fx.Run("generate", "--model", dir, "--prompt", "hi")
            : fx.Run("classify", "--model", dir, "--image", Path.Combine(fx.Root, "image.png"));
        Assert.Equal(1, r.ExitCode);
        Assert.Contains($"model_type '{modelType}' is not supported", r.Stderr);
        Assert.DoesNotContain("   at ", r.Stderr);
    }

    [Theory]
    [InlineData("generate", "--model", "x")]
    [InlineData("generate", "--prompt", "x")]
    [InlineData("classify", "--model", "x")]
    [InlineData("generate", "--bogus", "x")]
    public void Missing_or_unknown_options_are_usage_errors(string verb, string option, string value)
    {
        var r = fx.Run(verb, option, value);
        Assert.Equal(2, r.ExitCode);
        Assert.Contains($"nabla {verb}:", r.Stderr);
    }

    [Fact]
    public void A_missing_image_is_a_clear_error()
    {
        var r = fx.Run("classify", "--model", ZooFixture.Dir("vit"), "--image", Path.Combine(fx.Root, "nope.png"));
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("image not found", r.Stderr);
    }
}
