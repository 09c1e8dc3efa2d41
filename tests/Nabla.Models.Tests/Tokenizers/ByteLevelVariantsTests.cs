using Microsoft.ML.Tokenizers;
using Xunit;

namespace Nabla.Models.Tests.Tokenizers;

/// <summary>
/// The byte-level BPE variants of SmolLM (a Digits pre-tokenizer before ByteLevel) and Qwen2 (NFC, a Split regex,
/// ByteLevel without its own regex), on a vocabulary small enough to follow by hand. In GPT-2's byte-to-character
/// map a space is "Ġ" and the UTF-8 bytes C3 A9 of "é" are "Ã©"; letters and digits are themselves.
/// </summary>
public sealed class ByteLevelVariantsTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("nabla-bl-tok-").FullName;

    public void Dispose() => Directory.Delete(dir, recursive: true);

    const string Vocab = """{"a": 0, "Ġ": 1, "1": 2, "2": 3, "3": 4, "Ġ1": 5, "12": 6, "b": 7, "Ã©": 8, "Ã": 9, "©": 10, "Ġb": 11}""";
    const string Merges = """["Ġ 1", "1 2", "Ã ©", "Ġ b"]""";

    Tokenizer Load(string normalizer, string pre)
    {
        var p = Path.Combine(dir, Guid.NewGuid().ToString("N") + ".json");
        File.WriteAllText(p, $$"""
            {"version": "1.0", "added_tokens": [], "normalizer": {{normalizer}}, "pre_tokenizer": {{pre}}, "post_processor": null,
             "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
             "model": {"type": "BPE", "dropout": null, "unk_token": null, "fuse_unk": false, "byte_fallback": false,
                       "vocab": {{Vocab}}, "merges": {{Merges}}} }
            """);
        return Models.Tokenizers.FromTokenizerJson(p);
    }

    const string ByteLevel = """{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}""";

    [Fact]
    public void SmolLmDigitsIsolateEveryDigit()
    {
        var smol = Load("null", $$"""{"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, {{ByteLevel}}]}""");
        var gpt2 = Load("null", ByteLevel);
        // GPT-2's regex keeps " 123" together, so "Ġ 1" merges; Digits makes " ", "1", "2", "3" separate words.
        Assert.Equal([0, 5, 3, 4], gpt2.EncodeToIds("a 123"));
        Assert.Equal([0, 1, 2, 3, 4], smol.EncodeToIds("a 123"));
        Assert.Equal([6], gpt2.EncodeToIds("12"));
        Assert.Equal([2, 3], smol.EncodeToIds("12"));
        // Letters are untouched by Digits: " b" is still one word.
        Assert.Equal([0, 11], smol.EncodeToIds("a b"));
        Assert.Equal("a 123", smol.Decode(smol.EncodeToIds("a 123")));
    }

    [Fact]
    public void Qwen2NormalizesToNfcBeforeTheSplitRegex()
    {
        var pre = """
            {"type": "Sequence", "pretokenizers": [
              {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, "behavior": "Isolated", "invert": false},
              {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}]}
            """;
        var qwen = Load("""{"type": "NFC"}""", pre);
        // "e" + U+0301 becomes U+00E9 under NFC, whose bytes C3 A9 merge into "Ã©".
        Assert.Equal([8], qwen.EncodeToIds("\u00E9"));
        Assert.Equal([8], qwen.EncodeToIds("e\u0301"));
        // Qwen2's \p{N} takes one digit at a time, like Digits.
        Assert.Equal([0, 1, 2, 3, 4], qwen.EncodeToIds("a 123"));
        Assert.Equal("\u00E9", qwen.Decode([8]));
    }
}
