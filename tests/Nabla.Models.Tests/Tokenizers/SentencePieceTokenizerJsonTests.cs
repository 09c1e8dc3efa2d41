using System.Globalization;
using System.Text;
using Microsoft.ML.Tokenizers;
using Xunit;

namespace Nabla.Models.Tests.Tokenizers;

/// <summary>
/// SentencePiece-style tokenizer.json files (Llama 2 legacy normalizer, Mistral Metaspace pre-tokenizer), built by hand:
/// ids 0-2 are &lt;unk&gt; &lt;s&gt; &lt;/s&gt;, 3-258 the byte tokens &lt;0x00&gt;..&lt;0xFF&gt; (so byte b is id 3 + b),
/// then the pieces below. Every expected id is worked out from this vocabulary and the merge ranks.
/// </summary>
public sealed class SentencePieceTokenizerJsonTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("nabla-sp-tok-").FullName;

    public void Dispose() => Directory.Delete(dir, recursive: true);

    static readonly string[] Pieces =
    [
        "▁", "h", "e", "l", "o", "w", "r", "d",          // 259-266
        "ll", "▁h", "▁he", "▁hell", "▁hello",           // 267-271
        "▁w", "or", "▁wor", "ld", "▁world", "lo",        // 272-277
    ];

    // Rank order: "l l" first, so "hello" keeps "ll" and never makes "lo" (rank 10).
    static readonly string[] Merges =
        ["l l", "▁ h", "▁h e", "▁he ll", "▁hell o", "▁ w", "o r", "▁w or", "l d", "▁wor ld", "l o"];

    static int Id(string piece) => 259 + Array.IndexOf(Pieces, piece);

    static int Byte(int b) => 3 + b;

    const string Added = """
        [{"id": 0, "content": "<unk>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
         {"id": 1, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
         {"id": 2, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}]
        """;

    const string BosTemplate = """
        {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
         "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}
        """;

    // As transformers' LlamaConverter wrote Llama 2's tokenizer.json (legacy): normalizer Prepend + Replace, no pre-tokenizer.
    const string LegacyNormalizer = """{"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}""";
    const string LegacyDecoder = """
        {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"},
         {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
        """;
    // As Mistral's tokenizer.json: no normalizer, a Metaspace pre-tokenizer and decoder.
    const string MetaspacePre = """{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false}""";

    static string Json(string normalizer, string pre, string decoder, bool byteFallback = true, string postProcessor = BosTemplate)
    {
        var vocab = new StringBuilder("{\"<unk>\": 0, \"<s>\": 1, \"</s>\": 2");
        for (int b = 0; b < 256; b++) vocab.Append(CultureInfo.InvariantCulture, $", \"<0x{b:X2}>\": {Byte(b)}");
        foreach (var p in Pieces) vocab.Append(CultureInfo.InvariantCulture, $", \"{p}\": {Id(p)}");
        vocab.Append('}');
        string merges = "[" + string.Join(", ", Merges.Select(m => $"\"{m}\"")) + "]";
        return $$"""
            {
              "version": "1.0",
              "truncation": null,
              "padding": null,
              "added_tokens": {{Added}},
              "normalizer": {{normalizer}},
              "pre_tokenizer": {{pre}},
              "post_processor": {{postProcessor}},
              "decoder": {{decoder}},
              "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null, "end_of_word_suffix": null,
                        "fuse_unk": true, "byte_fallback": {{(byteFallback ? "true" : "false")}}, "vocab": {{vocab}}, "merges": {{merges}}}
            }
            """;
    }

    Tokenizer Load(string json, string name = "tokenizer.json")
    {
        var folder = Path.Combine(dir, Path.GetFileNameWithoutExtension(name) + "-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, "tokenizer.json"), json);
        return Models.Tokenizers.FromPretrained(folder);
    }

    Tokenizer Legacy(bool byteFallback = true) => Load(Json(LegacyNormalizer, "null", LegacyDecoder, byteFallback));

    // transformers' LlamaConverter with legacy=False: Metaspace pre-tokenizer, the same decoder as legacy files.
    Tokenizer Mistral() => Load(Json("null", MetaspacePre, LegacyDecoder));

    // A Metaspace decoder, as other SentencePiece conversions write it.
    Tokenizer MetaspaceDecoding() => Load(Json("null", MetaspacePre, """{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false}"""));

    [Fact]
    public void LegacyLlamaEncodesByMergeRank()
    {
        var tok = Legacy();
        Assert.IsType<SentencePieceBpeTokenizer>(tok);
        Assert.Equal([1, Id("▁hello"), Id("▁world")], tok.EncodeToIds("hello world"));
        // "l l" outranks "l o": "lo" is made only where no "ll" competes.
        Assert.Equal([1, Id("▁"), Id("lo")], tok.EncodeToIds("lo"));
        Assert.Equal([1, Id("▁hell")], tok.EncodeToIds("hell"));
        Assert.Equal([1, Id("▁he"), Id("l")], tok.EncodeToIds("hel"));
        // Two spaces: the second is a "▁" of its own before "▁world".
        Assert.Equal([1, Id("▁hello"), Id("▁"), Id("▁world")], tok.EncodeToIds("hello  world"));
        Assert.Equal(["<s>", "▁hello", "▁world"], tok.EncodeToTokens("hello world", out _).Select(t => t.Value));
    }

    [Fact]
    public void ByteFallbackForCharactersOutsideTheVocabulary()
    {
        var tok = Legacy();
        // i (0x69) and ! (0x21) are not pieces: each becomes its byte token.
        Assert.Equal([1, Id("▁h"), Byte(0x69), Byte(0x21)], tok.EncodeToIds("hi!"));
        // é is C3 A9 in UTF-8; 😀 (U+1F600, a surrogate pair in .NET) is F0 9F 98 80.
        Assert.Equal([1, Id("▁h"), Byte(0xC3), Byte(0xA9), Id("ll"), Id("o")], tok.EncodeToIds("héllo"));
        Assert.Equal([1, Id("▁"), Byte(0xF0), Byte(0x9F), Byte(0x98), Byte(0x80)], tok.EncodeToIds("😀"));
    }

    [Fact]
    public void WithoutByteFallbackUnknownCharactersFuseIntoOneUnk()
    {
        var tok = Legacy(byteFallback: false);
        Assert.Equal([1, Id("▁h"), 0], tok.EncodeToIds("hi!!"));
        Assert.Equal([1, Id("▁hello"), Id("▁"), 0, Id("▁world")], tok.EncodeToIds("hello ?? world"));
    }

    [Theory]
    [InlineData("hello world")]
    [InlineData("héllo wörld 😀!")]
    [InlineData("tabs\tand\nnewlines")]
    [InlineData("日本語のテキスト")]
    public void DecodeInvertsEncode(string text)
    {
        foreach (var tok in new[] { Legacy(), Mistral(), MetaspaceDecoding() })
            Assert.Equal(text, tok.Decode(tok.EncodeToIds(text)));
    }

    [Fact]
    public void LeadingSpacesDecodeAsTransformersDoes()
    {
        // Legacy prepends "▁" to "▁▁two" and strips one space back: exact.
        Assert.Equal("  two", Legacy().Decode(Legacy().EncodeToIds("  two")));
        // Metaspace "first" does not prepend to a text that starts with a space, and the decoders still remove one:
        // tokenizers gives " two" for "  two" too.
        Assert.Equal(" two", Mistral().Decode(Mistral().EncodeToIds("  two")));
        Assert.Equal(" two", MetaspaceDecoding().Decode(MetaspaceDecoding().EncodeToIds("  two")));
    }

    [Fact]
    public void DecodeHandlesSpecialAndBrokenByteTokens()
    {
        var tok = (SentencePieceBpeTokenizer)Legacy();
        int[] ids = [1, Id("▁hello"), Id("▁world"), 2];
        Assert.Equal("hello world", tok.Decode(ids));
        // As transformers: the leading space is stripped only from the first token, here <s>.
        Assert.Equal("<s> hello world</s>", tok.Decode(ids, skipSpecialTokens: false));
        // A lone lead byte is not UTF-8: one replacement character per byte, as the ByteFallback decoder does.
        Assert.Equal("h\uFFFD", tok.Decode([Id("▁h"), Byte(0xC3)]));
        Assert.Equal("hé", tok.Decode([Id("▁h"), Byte(0xC3), Byte(0xA9)]));
        Assert.Throws<ArgumentOutOfRangeException>(() => tok.Decode([100_000]));
    }

    [Fact]
    public void SpecialTokensInTheTextAndTheTwoPrependRules()
    {
        // Legacy: every section between special tokens gets its own "▁" (the normalizer runs per section).
        Assert.Equal([1, 1, Id("▁hello"), 2], Legacy().EncodeToIds("<s>hello</s>"));
        // Metaspace prepend_scheme "first": only a section at the start of the text gets "▁".
        var mistral = Mistral();
        Assert.Equal([1, Id("▁hello"), Id("▁world")], mistral.EncodeToIds("hello world"));
        Assert.Equal([1, 1, Id("h"), Id("e"), Id("ll"), Id("o"), 2], mistral.EncodeToIds("<s>hello</s>"));
        // A text that already starts with a space is not given a second "▁" by Metaspace, unlike the legacy normalizer.
        Assert.Equal([1, Id("▁hello")], mistral.EncodeToIds(" hello"));
        Assert.Equal([1, Id("▁"), Id("▁hello")], Legacy().EncodeToIds(" hello"));
    }

    [Fact]
    public void MetaspaceSplitAndOlderFields()
    {
        // split: true cuts before every "▁", so no merge spans two words; add_prefix_space: true is prepend "always".
        var pre = """{"type": "Metaspace", "replacement": "▁", "add_prefix_space": true}""";
        var tok = (SentencePieceBpeTokenizer)Load(Json("null", pre, """{"type": "Metaspace", "replacement": "▁", "add_prefix_space": true}"""));
        Assert.True(tok.Split);
        Assert.Equal(SentencePieceBpeTokenizer.PrependScheme.Always, tok.Prepend);
        Assert.Equal([1, Id("▁hello"), Id("▁world")], tok.EncodeToIds("hello world"));
        Assert.Equal([1, 1, Id("▁hello")], tok.EncodeToIds("<s>hello"));
        Assert.Equal([Id("▁hello")], tok.EncodeToIds("hello", addSpecialTokens: false));
        Assert.Equal("hello world", tok.Decode(tok.EncodeToIds("hello world")));
    }

    [Fact]
    public void BadSentencePieceFilesAreRefusedNamingTheProblem()
    {
        var e = Assert.Throws<ModelFormatException>(() => Load(Json(LegacyNormalizer, "null", LegacyDecoder).Replace("\"l l\"", "\"l q\"", StringComparison.Ordinal)));
        Assert.Contains("merge 0", e.Message);
        e = Assert.Throws<ModelFormatException>(() => Load(Json("null", """{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "sometimes"}""", "null")));
        Assert.Contains("sometimes", e.Message);
        e = Assert.Throws<ModelFormatException>(() => Load(Json("null", """{"type": "Whitespace"}""", LegacyDecoder)));
        Assert.Contains("Whitespace", e.Message);
        e = Assert.Throws<ModelFormatException>(() => Load(Json(LegacyNormalizer, "null", LegacyDecoder).Replace("\"unk_token\": \"<unk>\"", "\"unk_token\": \"<nope>\"", StringComparison.Ordinal)));
        Assert.Contains("<nope>", e.Message);
    }
}

/// <summary>
/// tokenizer.json files written from a SentencePiece BPE model the way transformers converts Llama's, checked against
/// the ids and text SentencePiece 0.1.97 itself gives (tools/fixtures/make_tokenizer_fixtures.py).
/// </summary>
public sealed class SentencePieceGoldenTests
{
    public static TheoryData<string> Variants() => new() { "llama-legacy", "llama-metaspace" };

    [Theory]
    [MemberData(nameof(Variants))]
    public void MatchesSentencePiece(string variant)
    {
        string folder = Path.Combine(Zoo.ZooFixture.Root, "tokenizers", variant);
        var tok = Assert.IsType<SentencePieceBpeTokenizer>(Models.Tokenizers.FromPretrained(folder));
        using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllBytes(Path.Combine(folder, "expected.json")));
        int checkedCases = 0;
        foreach (var c in doc.RootElement.GetProperty("cases").EnumerateArray())
        {
            string text = c.GetProperty("text").GetString()!;
            int[] ids = c.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
            string[] pieces = c.GetProperty("pieces").EnumerateArray().Select(e => e.GetString()!).ToArray();
            Assert.True(ids.SequenceEqual(tok.EncodeToIds(text)),
                $"{variant} '{text}': expected {string.Join(" ", pieces)}, got {string.Join(" ", tok.EncodeToTokens(text, out _).Select(t => t.Value))}");
            Assert.Equal(c.GetProperty("decoded").GetString(), tok.Decode(ids));
            checkedCases++;
        }
        Assert.True(checkedCases >= 10, $"{checkedCases} cases");
    }
}
