using System.Diagnostics;
using System.Globalization;
using System.Text.Encodings.Web;
using System.Text.Json;
using Microsoft.ML.Tokenizers;
using Nabla.Models;
using Nabla.Models.Zoo;
using Nabla.NN;
using Nabla.Vision;

namespace Nabla.Cli;

/// <summary>The model-zoo verbs: generate (causal LM text generation) and classify (image classification).</summary>
static class ModelCommands
{
    public const string GenerateHelp = """
        nabla generate --model DIR|ORG/NAME --prompt TEXT [options]: continue a prompt with a causal language model
        (GPT-2 or Llama, chosen by config.json's model_type) and stream the new text to stdout as it is generated.

        options:
          --model DIR|ORG/NAME  a model folder (config.json, weights, tokenizer.json or vocab.json + merges.txt), or a
                                Hugging Face Hub repository id, downloaded into the shared cache (see nabla hub --help)
          --revision R          hub branch, tag or commit (default main)
          --prompt TEXT         the text to continue (required)
          --max-new-tokens N    tokens to generate at most (default 50); stops earlier at the model's EOS token
          --temperature T       sample at temperature T; 0 (the default, unless --top-k/--top-p is given) is greedy
          --top-k K             sample from the K most likely tokens only (0: no limit)
          --top-p P             sample from the smallest set of tokens whose probability reaches P (default 1)
          --seed S              random seed for sampling (default 0)
          --no-cache            recompute every position at each step instead of using the key/value cache
          --json                after the text, print one JSON line with the prompt ids, new ids, text and speed
        """;

    public const string ClassifyHelp = """
        nabla classify --model DIR --image FILE [options]: classify an image with a ViT (model_type "vit") or a
        torchvision ResNet (model_type "torchvision-resnet") folder and print the most likely labels.

        The image (PNG, JPEG, BMP, GIF, WebP) is scaled to [0, 1], resized to the model's image size (config
        image_size; 224 for a ResNet without one) with bilinear interpolation, and normalized with the mean/std of
        preprocessor_config.json or config.json (image_mean, image_std) when given, else ImageNet's.

        options:
          --model DIR|ORG/NAME  a model folder (config.json + weights), or a Hugging Face Hub repository id
          --revision R          hub branch, tag or commit (default main)
          --image FILE          the image to classify (required)
          --top N               how many labels to print (default 5)
          --json                print one JSON object instead of the table
        """;

    static readonly JsonSerializerOptions JsonOutput = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    static readonly double[] ImageNetMean = [0.485, 0.456, 0.406];
    static readonly double[] ImageNetStd = [0.229, 0.224, 0.225];

    public static int Generate(string[] argv)
    {
        var a = new Args(argv, new HashSet<string> { "--no-cache", "--json" },
            new HashSet<string> { "--model", "--revision", "--prompt", "--max-new-tokens", "--temperature", "--top-k", "--top-p", "--seed" });
        if (a.Positionals.Count > 0) throw new UsageException($"unexpected argument '{a.Positionals[0]}'");
        var modelArg = a.Get("--model") ?? throw new UsageException("--model is required");
        var prompt = a.Get("--prompt") ?? throw new UsageException("--prompt is required");
        int maxNew = a.Int("--max-new-tokens", 50);
        if (maxNew < 0) throw new UsageException($"--max-new-tokens must be >= 0, got {maxNew}");
        double temperature = a.Double("--temperature", 0);
        int topK = a.Int("--top-k", 0);
        double topP = a.Double("--top-p", 1.0);
        int seed = a.Int("--seed", 0);
        if (temperature < 0) throw new UsageException($"--temperature must be >= 0, got {temperature}");
        if (topK < 0) throw new UsageException($"--top-k must be >= 0, got {topK}");
        if (!(topP > 0 && topP <= 1)) throw new UsageException($"--top-p must be in (0, 1], got {topP}");
        if (seed < 0) throw new UsageException($"--seed must be >= 0, got {seed}");
        bool sample = temperature > 0 || (a.Has("--top-k") && topK > 0) || (a.Has("--top-p") && topP < 1);
        if (sample && temperature == 0)
        {
            if (a.Has("--temperature")) throw new UsageException("--temperature 0 means greedy decoding; it cannot be combined with --top-k/--top-p");
            temperature = 1.0;
        }
        bool json = a.Has("--json");

        var dir = ResolveModel(modelArg, a.Get("--revision"),
            ["*.json", "*.safetensors", "tokenizer.model", "merges.txt", "vocab.txt"]);
        var config = HfConfig.Load(dir);
        var type = config.ModelType;
        ICausalLanguageModel model = type switch
        {
            "gpt2" => Gpt2LMHeadModel.FromPretrained(dir),
            "llama" or "mistral" => LlamaForCausalLM.FromPretrained(dir),
            null => throw new ModelFormatException($"{config.Source}: no model_type; generate supports gpt2 and llama"),
            _ => throw new ModelFormatException($"{config.Source}: model_type '{type}' is not supported by generate (gpt2, llama, mistral)"),
        };
        Tokenizer tokenizer;
        try { tokenizer = Tokenizers.FromPretrained(dir); }
        catch (ModelFormatException e) { throw new ModelFormatException($"cannot load the tokenizer: {e.Message}"); }

        var promptIds = tokenizer.EncodeToIds(prompt).Select(i => (long)i).ToList();
        if (promptIds.Count == 0)
        {
            var bos = config.GetIntList("bos_token_id");
            if (bos.Length == 0) throw new UsageException("the prompt encodes to no tokens and the config has no bos_token_id to start from");
            promptIds.Add(bos[0]);
        }
        var bad = promptIds.Where(i => i < 0 || i >= model.VocabSize).ToList();
        if (bad.Count > 0)
            throw new ModelFormatException($"the tokenizer produced id {bad[0]} outside the model's vocabulary [0, {model.VocabSize}); do the tokenizer and model belong together?");

        var eos = model.EosTokenIds;
        // NOTE: decode the prompt and the new tokens together and print what follows the decoded prompt: a
        // SentencePiece tokenizer drops the leading space of the first token it decodes, so decoding the new tokens
        // alone would glue the first new word to the prompt.
        var promptInts = promptIds.Select(i => (int)i).ToList();
        string promptText = tokenizer.Decode(promptInts);
        var generated = new List<int>();
        string DecodeNew() =>
            tokenizer.Decode(promptInts.Concat(generated)) is var full && full.StartsWith(promptText, StringComparison.Ordinal)
                ? full[promptText.Length..] : tokenizer.Decode(generated);
        var stdout = Console.Out;
        int printed = 0;
        var clock = Stopwatch.StartNew();
        TimeSpan? firstToken = null;
        void OnStep(long[] chosen)
        {
            firstToken ??= clock.Elapsed;
            long id = chosen[0];
            if (eos.Contains(id)) return; // the EOS token ends the text; it is not part of it
            generated.Add((int)id);
            var text = DecodeNew();
            // NOTE: a byte-level token can end inside a multi-byte character, which decodes to U+FFFD until the
            // next token completes it; hold such a tail back rather than print a replacement character.
            int end = text.Length;
            while (end > printed && text[end - 1] == '\uFFFD') end--;
            if (end > printed)
            {
                stdout.Write(text[printed..end]);
                stdout.Flush();
                printed = end;
            }
        }

        stdout.Write(prompt);
        stdout.Flush();
        var options = new GenerationOptions
        {
            MaxNewTokens = maxNew,
            DoSample = sample,
            Temperature = sample ? temperature : 1.0,
            TopK = topK,
            TopP = topP,
            Seed = (ulong)seed,
            UseCache = !a.Has("--no-cache"),
            OnStep = OnStep,
        };
        Tensor output;
        try
        {
            output = TextGeneration.Generate(model, Tensor.FromArray(promptIds.ToArray(), 1, promptIds.Count), options);
        }
        catch (ArgumentException e)
        {
            throw new NablaException($"generation failed: {e.Message}");
        }
        var all = output.ToArray<long>();
        var newIds = all.Skip(promptIds.Count).ToArray();
        var finalText = DecodeNew();
        if (finalText.Length > printed) stdout.Write(finalText[printed..]);
        stdout.WriteLine();
        stdout.Flush();
        double seconds = clock.Elapsed.TotalSeconds;
        double decodeRate = newIds.Length > 1 && firstToken is TimeSpan ft && seconds > ft.TotalSeconds
            ? (newIds.Length - 1) / (seconds - ft.TotalSeconds) : double.NaN;
        Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{newIds.Length} token(s) in {seconds:0.00} s (prompt {promptIds.Count} token(s), first token {firstToken?.TotalSeconds ?? 0:0.00} s, {decodeRate:0.0} tokens/s after it)"));
        if (json)
        {
            var line = JsonSerializer.Serialize(new Dictionary<string, object>
            {
                ["model_type"] = type,
                ["prompt_ids"] = promptIds,
                ["new_ids"] = newIds,
                ["text"] = finalText,
                ["seconds"] = seconds,
            }, JsonOutput);
            stdout.WriteLine(line);
        }
        return 0;
    }

    public static int Classify(string[] argv)
    {
        var a = new Args(argv, new HashSet<string> { "--json" }, new HashSet<string> { "--model", "--revision", "--image", "--top" });
        if (a.Positionals.Count > 0) throw new UsageException($"unexpected argument '{a.Positionals[0]}'");
        var modelArg = a.Get("--model") ?? throw new UsageException("--model is required");
        var image = a.Get("--image") ?? throw new UsageException("--image is required");
        int top = a.Int("--top", 5);
        if (top < 1) throw new UsageException($"--top must be >= 1, got {top}");
        if (!File.Exists(image)) throw new FileNotFoundException($"image not found: {image}", image);

        var dir = ResolveModel(modelArg, a.Get("--revision"), ["*.json", "*.safetensors"]);
        var config = HfConfig.Load(dir);
        var type = config.ModelType;
        Module model;
        string[] labels;
        int size;
        switch (type)
        {
            case "vit":
                var vit = ViTForImageClassification.FromPretrained(dir);
                model = vit;
                labels = vit.Labels.ToArray();
                size = vit.Config.ImageSize;
                break;
            case "torchvision-resnet":
                var resnet = ResNet.FromPretrained(dir);
                model = resnet;
                labels = config.Labels(defaultCount: resnet.Config.NumClasses);
                size = config.GetInt("image_size", 224);
                break;
            case null:
                throw new ModelFormatException($"{config.Source}: no model_type; classify supports vit and torchvision-resnet");
            default:
                throw new ModelFormatException($"{config.Source}: model_type '{type}' is not supported by classify (vit, torchvision-resnet)");
        }
        var (mean, std) = Normalization(dir, config);

        var pixels = ImageIO.Read(image); // uint8 (H, W, 3)
        var x = pixels.To(DType.Float32).Div(255.0).Permute(2, 0, 1).Unsqueeze(0).Contiguous();
        if (x.Size(2) != size || x.Size(3) != size)
            x = Functional.Interpolate(x, (size, size), mode: "bilinear");
        var m = Tensor.FromArray(mean.Select(v => (float)v).ToArray(), 1, 3, 1, 1);
        var s = Tensor.FromArray(std.Select(v => (float)v).ToArray(), 1, 3, 1, 1);
        x = x.Sub(m).Div(s);

        float[] probs;
        using (GradMode.NoGrad())
            probs = Functional.Softmax(model.Forward(x), -1).Contiguous().ToArray<float>();
        var ranked = Enumerable.Range(0, probs.Length).OrderByDescending(i => probs[i]).ThenBy(i => i).Take(top).ToArray();
        string Label(int i) => i < labels.Length ? labels[i] : "LABEL_" + i.ToString(CultureInfo.InvariantCulture);
        if (a.Has("--json"))
        {
            var list = ranked.Select(i => new Dictionary<string, object> { ["id"] = i, ["label"] = Label(i), ["probability"] = (double)probs[i] }).ToList();
            Console.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object> { ["model_type"] = type, ["top"] = list }, JsonOutput));
            return 0;
        }
        int width = Math.Max(5, ranked.Max(i => Label(i).Length));
        foreach (var i in ranked)
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{Label(i).PadRight(width)}  {probs[i]:0.0000}  (id {i})"));
        return 0;
    }

    /// <summary>
    /// A model folder: <paramref name="model"/> itself when it is a folder; a hub snapshot when it looks like a
    /// repository id (ORG/NAME or NAME, not an absolute or ./ path); otherwise a clear error.
    /// </summary>
    static string ResolveModel(string model, string? revision, string[] include)
    {
        if (Directory.Exists(model))
        {
            if (!File.Exists(Path.Combine(model, "config.json")))
                throw new ModelFormatException($"{model}: not a model folder (no config.json)");
            return model;
        }
        bool pathLike = Path.IsPathRooted(model) || model.StartsWith('.') || model.StartsWith('~') || model.Contains('\\')
            || model.Count(c => c == '/') > 1 || File.Exists(model);
        if (!pathLike)
        {
            try
            {
                HubCache.ValidateRepoId(model);
            }
            catch (ArgumentException)
            {
                pathLike = true;
            }
        }
        if (pathLike) throw new DirectoryNotFoundException($"model folder not found: {model}");
        Console.Error.WriteLine($"fetching {model} from the hub ({string.Join(", ", include)})");
        try
        {
            return Hub.SnapshotDownload(model, revision ?? "main", include, HubOptions.FromEnvironment());
        }
        catch (HubException e)
        {
            throw new NablaException($"'{model}' is not a local folder and could not be fetched from the hub: {e.Message}");
        }
    }

    /// <summary>image_mean / image_std from preprocessor_config.json, else config.json, else ImageNet's.</summary>
    static (double[] mean, double[] std) Normalization(string dir, HfConfig config)
    {
        var pre = Path.Combine(dir, "preprocessor_config.json");
        HfConfig? preprocessor = File.Exists(pre) ? HfConfig.Load(pre) : null;
        double[]? Triple(string key)
        {
            foreach (var c in new[] { preprocessor, config })
            {
                if (c is null || !c.TryGet(key, out var v)) continue;
                if (v.ValueKind == JsonValueKind.Number) return [v.GetDouble(), v.GetDouble(), v.GetDouble()];
                if (v.ValueKind == JsonValueKind.Array && v.GetArrayLength() == 3 && v.EnumerateArray().All(e => e.ValueKind == JsonValueKind.Number))
                    return v.EnumerateArray().Select(e => e.GetDouble()).ToArray();
                throw new ModelFormatException($"{c.Source}: '{key}' must be a number or a list of 3 numbers");
            }
            return null;
        }
        var mean = Triple("image_mean") ?? ImageNetMean;
        var std = Triple("image_std") ?? ImageNetStd;
        if (std.Any(v => !(v > 0))) throw new ModelFormatException($"image_std must be positive, got [{string.Join(", ", std)}]");
        return (mean, std);
    }
}
