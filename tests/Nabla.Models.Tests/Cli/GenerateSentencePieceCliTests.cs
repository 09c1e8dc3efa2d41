using System.Text.Json;
using Nabla.Models.Tests.Zoo;
using Nabla.Models.Zoo;
using Xunit;

namespace Nabla.Models.Tests.Cli;

/// <summary>`nabla generate` on the llama fixture with a SentencePiece-style tokenizer.json (Llama 2 layout).</summary>
public sealed class GenerateSentencePieceCliTests : IDisposable
{
    readonly string root = Directory.CreateTempSubdirectory("nabla-cli-sp-").FullName;

    public void Dispose() => Directory.Delete(root, recursive: true);

    /// <summary>
    /// 100 ids, the llama fixture's vocab_size: &lt;unk&gt; &lt;s&gt; &lt;/s&gt;, "▁", a..z, six merged pieces, then byte tokens
    /// &lt;0x00&gt;.. up to id 99.
    /// </summary>
    static string SentencePieceJson()
    {
        var vocab = new Dictionary<string, int> { ["<unk>"] = 0, ["<s>"] = 1, ["</s>"] = 2, ["\u2581"] = 3 };
        for (char c = 'a'; c <= 'z'; c++) vocab[c.ToString()] = vocab.Count;
        string[] pieces = ["\u2581t", "he", "\u2581the", "\u2581c", "at", "\u2581cat"];
        foreach (var p in pieces) vocab[p] = vocab.Count;
        for (int b = 0; vocab.Count < 100; b++) vocab[$"<0x{b:X2}>"] = vocab.Count;
        var special = new[] { "<unk>", "<s>", "</s>" }.Select((c, i) => new Dictionary<string, object>
        {
            ["id"] = i, ["content"] = c, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false, ["normalized"] = false, ["special"] = true,
        }).ToArray();
        var doc = new Dictionary<string, object?>
        {
            ["version"] = "1.0",
            ["added_tokens"] = special,
            ["normalizer"] = JsonDocument.Parse("""{"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}""").RootElement,
            ["pre_tokenizer"] = null,
            ["post_processor"] = JsonDocument.Parse("""{"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}], "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}""").RootElement,
            ["decoder"] = JsonDocument.Parse("""{"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}""").RootElement,
            ["model"] = new Dictionary<string, object?>
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = "<unk>", ["fuse_unk"] = true, ["byte_fallback"] = true,
                ["vocab"] = vocab, ["merges"] = new[] { "\u2581 t", "h e", "\u2581t he", "\u2581 c", "a t", "\u2581c at" },
            },
        };
        return JsonSerializer.Serialize(doc);
    }

    [Fact]
    public void GenerateKeepsTheSpaceBeforeTheFirstNewWord()
    {
        string dir = Path.Combine(root, "llama-sp");
        Directory.CreateDirectory(dir);
        foreach (var f in new[] { "config.json", "model.safetensors" }) File.Copy(Path.Combine(ZooFixture.Dir("llama"), f), Path.Combine(dir, f));
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), SentencePieceJson());

        const string prompt = "cat the";
        var r = NablaProcess.Run(root, "generate", "--model", dir, "--prompt", prompt, "--max-new-tokens", "10", "--json");
        Assert.True(r.ExitCode == 0, r.ToString());
        var json = r.LastJson;
        var promptIds = json.GetProperty("prompt_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        var newIds = json.GetProperty("new_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        var tok = Assert.IsType<SentencePieceBpeTokenizer>(Models.Tokenizers.FromPretrained(dir));
        // <s>, "▁cat", "▁the": worked out from the merges above.
        Assert.Equal([1, tok.Vocabulary["\u2581cat"], tok.Vocabulary["\u2581the"]], promptIds);
        var eos = LlamaForCausalLM.FromPretrained(dir).EosTokenIds;
        var kept = newIds.Where(i => !eos.Contains(i)).ToList();
        // With the fixture's weights the first new token is "▁the": decoding it alone would give "the".
        Assert.Equal("\u2581the", tok.IdToToken(kept[0]));
        // The printed continuation is the decoded whole minus the decoded prompt, so a first new token "▁x"
        // keeps its space (decoding it alone would strip it).
        string whole = tok.Decode(promptIds.Concat(kept));
        Assert.StartsWith(prompt, whole, StringComparison.Ordinal);
        string expected = whole[prompt.Length..];
        Assert.StartsWith(" the", expected, StringComparison.Ordinal);
        Assert.Equal(expected, json.GetProperty("text").GetString());
        Assert.StartsWith(prompt + expected, r.Stdout, StringComparison.Ordinal);
    }
}
