using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace Nabla.Models;

/// <summary>
/// Reads Hugging Face tokenizer files into Microsoft.ML.Tokenizers objects: a <c>tokenizer.json</c> whose model is BPE
/// (byte-level like GPT-2, RoBERTa, Llama 3, Qwen2, SmolLM; SentencePiece-style with "▁" and byte fallback like Llama 2
/// and Mistral, as <see cref="SentencePieceBpeTokenizer"/>; or plain) or WordPiece (BERT), a BERT <c>vocab.txt</c>, or a
/// GPT-2 <c>vocab.json</c> + <c>merges.txt</c>.
/// </summary>
public static class Tokenizers
{
    /// <summary>The GPT-2 pre-tokenizer regex that the ByteLevel pre-tokenizer applies when use_regex is true.</summary>
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    /// <summary>
    /// Loads the tokenizer of a model folder (a hub snapshot): tokenizer.json when present, else vocab.txt (WordPiece,
    /// lower-casing as tokenizer_config.json's do_lower_case says, default true), else vocab.json + merges.txt (byte-level BPE).
    /// </summary>
    public static Tokenizer FromPretrained(string directory)
    {
        var json = Path.Combine(directory, "tokenizer.json");
        if (File.Exists(json)) return FromTokenizerJson(json);
        var vocabTxt = Path.Combine(directory, "vocab.txt");
        if (File.Exists(vocabTxt))
        {
            bool lower = true;
            var config = Path.Combine(directory, "tokenizer_config.json");
            if (File.Exists(config))
            {
                using var doc = ParseFile(config);
                if (doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty("do_lower_case", out var dl)
                    && dl.ValueKind is JsonValueKind.True or JsonValueKind.False)
                    lower = dl.GetBoolean();
            }
            return FromVocabTxt(vocabTxt, lower);
        }
        var vocabJson = Path.Combine(directory, "vocab.json");
        var merges = Path.Combine(directory, "merges.txt");
        if (File.Exists(vocabJson) && File.Exists(merges))
        {
            return BpeTokenizer.Create(new BpeOptions(vocabJson, merges)
            {
                ByteLevel = true,
                PreTokenizer = new RegexPreTokenizer(new Regex(Gpt2Pattern, RegexOptions.Compiled), null),
            });
        }
        throw new ModelFormatException($"{directory}: no tokenizer.json, vocab.txt or vocab.json + merges.txt found");
    }

    /// <summary>A BERT WordPiece tokenizer from a vocab.txt (one token a line, the line number its id).</summary>
    public static BertTokenizer FromVocabTxt(string path, bool lowerCase = true)
    {
        if (!File.Exists(path)) throw new ModelFormatException($"{path}: file not found");
        return BertTokenizer.Create(path, new BertOptions { LowerCaseBeforeTokenization = lowerCase });
    }

    /// <summary>Reads a Hugging Face tokenizer.json (model type BPE or WordPiece).</summary>
    /// <exception cref="ModelFormatException">the file is not valid JSON, misses the model, or uses what is not supported</exception>
    public static Tokenizer FromTokenizerJson(string path)
    {
        if (!File.Exists(path)) throw new ModelFormatException($"{path}: file not found");
        using var doc = ParseFile(path);
        var root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
            throw new ModelFormatException($"{path}: no 'model' object; is it a Hugging Face tokenizer.json?");
        var type = Str(model, "type");
        try
        {
            if (type is null && model.TryGetProperty("merges", out _)) type = "BPE"; // NOTE: old files omit the model type
            if (type is null && model.TryGetProperty("continuing_subword_prefix", out _) && !model.TryGetProperty("merges", out _)) type = "WordPiece";
            return type switch
            {
                "BPE" => CreateBpe(root, model, path),
                "WordPiece" => CreateWordPiece(root, model, path),
                _ => throw new ModelFormatException($"{path}: tokenizer model type '{type ?? "(none)"}' is not supported (BPE and WordPiece are)"),
            };
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException or KeyNotFoundException or InvalidCastException)
        {
            throw new ModelFormatException($"{path}: cannot build the {type} tokenizer: {e.Message}", e);
        }
    }

    static Tokenizer CreateBpe(JsonElement root, JsonElement model, string path)
    {
        var vocab = ReadVocab(model, path);
        var merges = ReadMerges(model, path);
        var added = ReadAddedTokens(root);
        var pre = root.TryGetProperty("pre_tokenizer", out var p) ? p : default;
        var norm = root.TryGetProperty("normalizer", out var n) ? n : default;
        var decoder = root.TryGetProperty("decoder", out var d) ? d : default;
        bool byteLevel = FindByType(pre, "ByteLevel") is not null || FindByType(decoder, "ByteLevel") is not null;

        var steps = new List<Func<string, string>>();
        AddNormalizerSteps(norm, steps, path);
        if (!byteLevel && (Bool(model, "byte_fallback") == true || FindByType(pre, "Metaspace") is not null
            || FindByType(decoder, "Metaspace") is not null || FindByType(decoder, "ByteFallback") is not null))
            return CreateSentencePieceBpe(root, model, pre, decoder, vocab, merges, added, steps, path);
        if (Bool(model, "byte_fallback") == true)
            throw new ModelFormatException($"{path}: BPE with byte_fallback and a ByteLevel pre-tokenizer or decoder is not supported");
        if (FindByType(pre, "Metaspace") is not null)
            throw new ModelFormatException($"{path}: a Metaspace pre-tokenizer together with ByteLevel is not supported");
        string? pattern = null;
        if (FindByType(pre, "Split") is { } split)
        {
            pattern = split.TryGetProperty("pattern", out var pat) ? (Str(pat, "Regex") ?? (Str(pat, "String") is { } s ? Regex.Escape(s) : null)) : null;
        }
        if (FindByType(pre, "ByteLevel") is { } bl)
        {
            if (Bool(bl, "add_prefix_space") == true) steps.Add(t => t.Length > 0 && t[0] != ' ' ? " " + t : t);
            if (pattern is null && Bool(bl, "use_regex") != false) pattern = Gpt2Pattern;
        }
        if (FindByType(pre, "Digits") is { } digits && Bool(digits, "individual_digits") == true)
        {
            // Digits(individual_digits) before ByteLevel (StarCoder, SmolLM): every digit is a word of its own.
            if (pattern == Gpt2Pattern) pattern = Gpt2Pattern.Replace(@" ?\p{N}+", @"\p{N}", StringComparison.Ordinal);
            else if (pattern is null) pattern = @"\p{N}|[^\p{N}]+";
            else throw new ModelFormatException($"{path}: a Digits pre-tokenizer together with a Split regex is not supported");
        }
        if (pattern is null && FindByType(pre, "Whitespace") is not null) pattern = @"\w+|[^\w\s]+";
        if (pattern is null && FindByType(pre, "WhitespaceSplit") is not null) pattern = @"\S+";

        var special = added.Count > 0 ? added.ToDictionary(a => a.Content, a => a.Id) : null;
        var (bos, eos) = PostProcessorTokens(root);
        var options = new BpeOptions(vocab)
        {
            Merges = merges,
            ByteLevel = byteLevel,
            SpecialTokens = special,
            UnknownToken = Str(model, "unk_token"),
            ContinuingSubwordPrefix = NonEmpty(Str(model, "continuing_subword_prefix")),
            EndOfWordSuffix = NonEmpty(Str(model, "end_of_word_suffix")),
            FuseUnknownTokens = Bool(model, "fuse_unk") ?? false,
            PreTokenizer = pattern is null ? null : new RegexPreTokenizer(new Regex(pattern, RegexOptions.Compiled), special),
            Normalizer = steps.Count > 0 ? new StepsNormalizer(steps) : null,
            BeginningOfSentenceToken = bos,
            EndOfSentenceToken = eos,
        };
        return BpeTokenizer.Create(options);
    }

    static SentencePieceBpeTokenizer CreateSentencePieceBpe(JsonElement root, JsonElement model, JsonElement pre, JsonElement decoder,
        List<KeyValuePair<string, int>> vocab, List<string> merges, List<AddedToken> added, List<Func<string, string>> steps, string path)
    {
        if (model.TryGetProperty("dropout", out var dropout) && dropout.ValueKind == JsonValueKind.Number && dropout.GetDouble() > 0)
            throw new ModelFormatException($"{path}: BPE dropout is not supported");
        var meta = FindByType(pre, "Metaspace");
        string replacement = "\u2581";
        var scheme = SentencePieceBpeTokenizer.PrependScheme.Never;
        bool split = false;
        if (meta is { } m)
        {
            replacement = Str(m, "replacement") ?? replacement;
            scheme = MetaspaceScheme(m, path);
            split = Bool(m, "split") ?? true;
        }
        else if (pre.ValueKind == JsonValueKind.Object)
            throw new ModelFormatException($"{path}: pre-tokenizer '{Str(pre, "type")}' is not supported with SentencePiece-style BPE (Metaspace or none is)");
        int strip = FindByType(decoder, "Strip") is { } st && Str(st, "content") is null or " " && st.TryGetProperty("start", out var start)
            && start.TryGetInt32(out int s0) && s0 > 0 ? s0 : 0;
        bool metaDecoder = FindByType(decoder, "Metaspace") is { } md && MetaspaceScheme(md, path) != SentencePieceBpeTokenizer.PrependScheme.Never;
        var (first, last) = PostProcessorTokens(root);
        var ids = vocab.GroupBy(kv => kv.Key, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.First().Value, StringComparer.Ordinal);
        foreach (var a in added) ids.TryAdd(a.Content, a.Id);
        int[] Ids(string? token) => token is null ? [] : ids.TryGetValue(token, out int id) ? [id]
            : throw new ModelFormatException($"{path}: the post-processor's token '{token}' is not in the vocab");
        Func<string, string>? normalizer = steps.Count == 0 ? null : t => { foreach (var step in steps) t = step(t); return t; };
        return new SentencePieceBpeTokenizer(vocab, merges, added.Select(a => (a.Content, a.Id, a.Special)),
            Str(model, "unk_token"), Bool(model, "byte_fallback") ?? false, Bool(model, "fuse_unk") ?? false, Bool(model, "ignore_merges") ?? false,
            meta is not null, replacement, scheme, split, normalizer, strip, metaDecoder, Ids(first), Ids(last), path);
    }

    static SentencePieceBpeTokenizer.PrependScheme MetaspaceScheme(JsonElement m, string path) => Str(m, "prepend_scheme") switch
    {
        "always" => SentencePieceBpeTokenizer.PrependScheme.Always,
        "first" => SentencePieceBpeTokenizer.PrependScheme.First,
        "never" => SentencePieceBpeTokenizer.PrependScheme.Never,
        null => Bool(m, "add_prefix_space") == false ? SentencePieceBpeTokenizer.PrependScheme.Never : SentencePieceBpeTokenizer.PrependScheme.Always,
        var other => throw new ModelFormatException($"{path}: Metaspace prepend_scheme '{other}' is not one of always, first, never"),
    };

    static Tokenizer CreateWordPiece(JsonElement root, JsonElement model, string path)
    {
        var vocab = ReadVocab(model, path);
        var added = ReadAddedTokens(root);
        var norm = root.TryGetProperty("normalizer", out var n) ? n : default;
        var bertNorm = FindByType(norm, "BertNormalizer");
        bool lower = bertNorm is { } bn ? Bool(bn, "lowercase") ?? true : FindByType(norm, "Lowercase") is not null;
        bool? stripAccents = bertNorm is { } bn2 ? Bool(bn2, "strip_accents") : FindByType(norm, "StripAccents") is not null ? true : null;
        bool cjk = bertNorm is { } bn3 ? Bool(bn3, "handle_chinese_chars") ?? true : false;
        var (cls, sep) = PostProcessorTokens(root);

        var unk = Str(model, "unk_token") ?? "[UNK]";
        var prefix = Str(model, "continuing_subword_prefix") ?? "##";
        if (prefix != "##") throw new ModelFormatException($"{path}: WordPiece with continuing_subword_prefix '{prefix}' is not supported (only '##')");

        // vocab.txt order: id i on line i. Ids must be dense; a gap is filled with a token that can never match.
        int max = vocab.Count == 0 ? -1 : vocab.Max(kv => kv.Value);
        foreach (var a in added) max = Math.Max(max, a.Id);
        var byId = new string?[max + 1];
        foreach (var (tok, id) in vocab) byId[id] = tok;
        foreach (var a in added) byId[a.Id] ??= a.Content;
        var specials = added.Where(a => a.Special).ToDictionary(a => a.Content, a => a.Id);
        var options = new BertOptions
        {
            LowerCaseBeforeTokenization = lower,
            ApplyBasicTokenization = true,
            IndividuallyTokenizeCjk = cjk,
            RemoveNonSpacingMarks = stripAccents ?? lower, // HF: strip_accents null follows lowercase
            UnknownToken = unk,
            ClassificationToken = cls ?? "[CLS]",
            SeparatorToken = sep ?? "[SEP]",
        };
        var lines = new List<string>(byId.Length);
        for (int i = 0; i < byId.Length; i++)
        {
            var t = byId[i] ?? $"[nabla-unused-{i}]";
            if (t.Contains('\n') || t.Contains('\r'))
                throw new ModelFormatException($"{path}: WordPiece token {i} contains a line break, which vocab.txt cannot hold");
            lines.Add(t);
        }
        // NOTE: BertTokenizer needs every one of its special tokens in the vocabulary; those a model lacks (often [MASK] or
        // [PAD] in small vocabularies) get ids after the model's own, which the model never sees unless it emits them.
        foreach (var needed in new[] { options.UnknownToken, options.ClassificationToken, options.SeparatorToken, options.PaddingToken, options.MaskingToken })
        {
            if (!lines.Contains(needed)) lines.Add(needed);
        }
        if (specials.Count > 0)
        {
            foreach (var t in new[] { options.UnknownToken, options.ClassificationToken, options.SeparatorToken, options.PaddingToken, options.MaskingToken })
                specials.TryAdd(t, lines.IndexOf(t));
            options.SpecialTokens = specials;
        }
        var text = string.Join('\n', lines) + "\n";
        using var stream = new MemoryStream(Encoding.UTF8.GetBytes(text));
        return BertTokenizer.Create(stream, options);
    }

    /// <summary>The tokens the post-processor puts first and last around a single sequence (BOS/[CLS], EOS/[SEP]).</summary>
    static (string? First, string? Last) PostProcessorTokens(JsonElement root)
    {
        if (!root.TryGetProperty("post_processor", out var pp) || pp.ValueKind != JsonValueKind.Object) return (null, null);
        if (FindByType(pp, "TemplateProcessing") is { } tp && tp.TryGetProperty("single", out var single) && single.ValueKind == JsonValueKind.Array)
        {
            var items = single.EnumerateArray().ToList();
            string? Special(JsonElement e) =>
                e.ValueKind == JsonValueKind.Object && e.TryGetProperty("SpecialToken", out var st) ? Str(st, "id") : null;
            return (items.Count > 0 ? Special(items[0]) : null, items.Count > 1 ? Special(items[^1]) : null);
        }
        if ((FindByType(pp, "BertProcessing") ?? FindByType(pp, "RobertaProcessing")) is { } bp)
        {
            string? Tok(string name) =>
                bp.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Array && v.GetArrayLength() > 0 && v[0].ValueKind == JsonValueKind.String ? v[0].GetString() : null;
            return (Tok("cls"), Tok("sep"));
        }
        return (null, null);
    }

    static void AddNormalizerSteps(JsonElement norm, List<Func<string, string>> steps, string path)
    {
        if (norm.ValueKind != JsonValueKind.Object) return;
        switch (Str(norm, "type"))
        {
            case "Sequence":
                if (norm.TryGetProperty("normalizers", out var list) && list.ValueKind == JsonValueKind.Array)
                    foreach (var item in list.EnumerateArray()) AddNormalizerSteps(item, steps, path);
                break;
            case "NFC": steps.Add(t => t.Normalize(NormalizationForm.FormC)); break;
            case "NFD": steps.Add(t => t.Normalize(NormalizationForm.FormD)); break;
            case "NFKC": steps.Add(t => t.Normalize(NormalizationForm.FormKC)); break;
            case "NFKD": steps.Add(t => t.Normalize(NormalizationForm.FormKD)); break;
            case "Lowercase": steps.Add(t => t.ToLowerInvariant()); break;
            case "Prepend":
                var prep = Str(norm, "prepend") ?? "";
                steps.Add(t => t.Length > 0 ? prep + t : t);
                break;
            case "Replace":
                var content = Str(norm, "content") ?? "";
                if (norm.TryGetProperty("pattern", out var pat) && Str(pat, "String") is { } s) steps.Add(t => t.Replace(s, content, StringComparison.Ordinal));
                else if (norm.TryGetProperty("pattern", out pat) && Str(pat, "Regex") is { } r)
                {
                    var re = new Regex(r);
                    steps.Add(t => re.Replace(t, content));
                }
                break;
            case "Strip":
                bool left = Bool(norm, "strip_left") ?? true, right = Bool(norm, "strip_right") ?? true;
                steps.Add(t => left && right ? t.Trim() : left ? t.TrimStart() : right ? t.TrimEnd() : t);
                break;
            case var other:
                throw new ModelFormatException($"{path}: normalizer '{other}' is not supported for BPE");
        }
    }

    static List<KeyValuePair<string, int>> ReadVocab(JsonElement model, string path)
    {
        if (!model.TryGetProperty("vocab", out var v) || v.ValueKind != JsonValueKind.Object)
            throw new ModelFormatException($"{path}: model.vocab is missing or not an object of token → id");
        var list = new List<KeyValuePair<string, int>>();
        foreach (var prop in v.EnumerateObject())
        {
            if (prop.Value.ValueKind != JsonValueKind.Number || !prop.Value.TryGetInt32(out int id) || id < 0)
                throw new ModelFormatException($"{path}: vocab entry '{prop.Name}' has no non-negative integer id");
            list.Add(new(prop.Name, id));
        }
        return list;
    }

    /// <summary>merges as "a b" strings (older files) or ["a", "b"] pairs (tokenizers ≥ 0.20).</summary>
    static List<string> ReadMerges(JsonElement model, string path)
    {
        var merges = new List<string>();
        if (!model.TryGetProperty("merges", out var m) || m.ValueKind == JsonValueKind.Null) return merges;
        if (m.ValueKind != JsonValueKind.Array) throw new ModelFormatException($"{path}: model.merges is not an array");
        int i = 0;
        foreach (var e in m.EnumerateArray())
        {
            if (e.ValueKind == JsonValueKind.String) merges.Add(e.GetString()!);
            else if (e.ValueKind == JsonValueKind.Array && e.GetArrayLength() == 2 && e[0].ValueKind == JsonValueKind.String && e[1].ValueKind == JsonValueKind.String)
            {
                var (a, b) = (e[0].GetString()!, e[1].GetString()!);
                if (a.Contains(' ') || b.Contains(' '))
                    throw new ModelFormatException($"{path}: merge {i} ('{a}', '{b}') holds a space, which the BPE merge list cannot express");
                merges.Add(a + " " + b);
            }
            else throw new ModelFormatException($"{path}: merge {i} is neither \"a b\" nor [\"a\", \"b\"]");
            i++;
        }
        return merges;
    }

    readonly record struct AddedToken(int Id, string Content, bool Special);

    static List<AddedToken> ReadAddedTokens(JsonElement root)
    {
        var list = new List<AddedToken>();
        if (!root.TryGetProperty("added_tokens", out var a) || a.ValueKind != JsonValueKind.Array) return list;
        foreach (var t in a.EnumerateArray())
        {
            if (t.ValueKind != JsonValueKind.Object || Str(t, "content") is not { Length: > 0 } content
                || !t.TryGetProperty("id", out var id) || !id.TryGetInt32(out int idv)) continue;
            list.Add(new AddedToken(idv, content, Bool(t, "special") ?? false));
        }
        return list;
    }

    /// <summary>The element of that type: <paramref name="e"/> itself or a member of its Sequence.</summary>
    static JsonElement? FindByType(JsonElement e, string type)
    {
        if (e.ValueKind != JsonValueKind.Object) return null;
        if (Str(e, "type") == type) return e;
        foreach (var key in new[] { "pretokenizers", "normalizers", "processors", "decoders" })
        {
            if (e.TryGetProperty(key, out var list) && list.ValueKind == JsonValueKind.Array)
                foreach (var item in list.EnumerateArray())
                    if (FindByType(item, type) is { } found) return found;
        }
        return null;
    }

    static JsonDocument ParseFile(string path)
    {
        try
        {
            return JsonDocument.Parse(File.ReadAllBytes(path), new JsonDocumentOptions { MaxDepth = 256 });
        }
        catch (JsonException e)
        {
            throw new ModelFormatException($"{path}: not valid JSON: {e.Message}", e);
        }
    }

    static string? Str(JsonElement e, string name) =>
        e.ValueKind == JsonValueKind.Object && e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    static bool? Bool(JsonElement e, string name) =>
        e.ValueKind == JsonValueKind.Object && e.TryGetProperty(name, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : null;

    static string? NonEmpty(string? s) => string.IsNullOrEmpty(s) ? null : s;

    /// <summary>A normalizer made of tokenizer.json's normalizer steps (and ByteLevel's add_prefix_space), applied in order.</summary>
    sealed class StepsNormalizer(List<Func<string, string>> steps) : Normalizer
    {
        public override string Normalize(string original)
        {
            foreach (var s in steps) original = s(original);
            return original;
        }

        public override string Normalize(ReadOnlySpan<char> original) => Normalize(original.ToString());
    }
}
