using System.Buffers;
using System.Globalization;
using System.Text;
using Microsoft.ML.Tokenizers;

namespace Nabla.Models;

/// <summary>
/// The SentencePiece-style BPE of a Hugging Face <c>tokenizer.json</c> (Llama 1/2, Mistral, TinyLlama, Gemma-like files):
/// spaces become "▁" (the <c>Metaspace</c> pre-tokenizer, or the legacy <c>Prepend</c> + <c>Replace</c> normalizer),
/// words are merged by the rank of <c>model.merges</c> starting from Unicode characters, and a character missing from
/// the vocabulary falls back to its UTF-8 bytes as <c>&lt;0xXX&gt;</c> tokens (<c>byte_fallback</c>), or to the
/// unknown token. Added tokens are matched in the raw text first (leftmost, longest). The post-processor's
/// template (for Llama, <c>&lt;s&gt;</c> first) is applied by <see cref="Tokenizer.EncodeToIds(string, bool, bool)"/>
/// as transformers does with add_special_tokens=True. Decoding reverses it: byte tokens are joined and read as
/// UTF-8 (an invalid sequence gives U+FFFD per byte), "▁" becomes a space, and the space the encoder prepended
/// is removed (the legacy decoder's <c>Strip</c> of one leading space, or the Metaspace decoder's rule of dropping
/// the first token's "▁").
/// </summary>
/// <remarks>Not supported: BPE dropout, added tokens with lstrip/rstrip/single_word, and Unigram models.</remarks>
public sealed class SentencePieceBpeTokenizer : Tokenizer
{
    /// <summary>How the encoder puts "▁" in front of a text section, as the Metaspace pre-tokenizer's prepend_scheme.</summary>
    public enum PrependScheme { Never, First, Always }

    readonly Dictionary<string, int> vocab;
    readonly Dictionary<int, string> tokens;
    readonly Dictionary<long, (int Rank, int Merged)> merges;
    readonly int[] byteIds = new int[256];
    readonly Dictionary<int, byte> byteOfId = [];   // the inverse of byteIds, for decoding
    static readonly UTF8Encoding StrictUtf8 = new(false, throwOnInvalidBytes: true);
    readonly (string Content, int Id, bool Special)[] added; // longest first
    readonly HashSet<int> specialIds;
    readonly Func<string, string>? legacyNormalizer;
    readonly int[] prefixIds, suffixIds;

    internal SentencePieceBpeTokenizer(
        IReadOnlyList<KeyValuePair<string, int>> vocabulary, IReadOnlyList<string> mergeList,
        IEnumerable<(string Content, int Id, bool Special)> addedTokens, string? unknownToken, bool byteFallback, bool fuseUnknown,
        bool ignoreMerges, bool metaspace, string replacement, PrependScheme prepend, bool split, Func<string, string>? legacyNormalizer,
        int stripLeadingSpaces, bool metaspaceDecoder, int[] prefixIds, int[] suffixIds, string source)
    {
        vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        tokens = new Dictionary<int, string>();
        foreach (var (tok, id) in vocabulary)
        {
            if (!vocab.TryAdd(tok, id)) throw new ModelFormatException($"{source}: vocab token '{tok}' appears twice");
            if (!tokens.TryAdd(id, tok)) throw new ModelFormatException($"{source}: vocab id {id} is given to both '{tokens[id]}' and '{tok}'");
        }
        merges = new Dictionary<long, (int, int)>();
        for (int rank = 0; rank < mergeList.Count; rank++)
        {
            var m = mergeList[rank];
            int space = m.IndexOf(' ', StringComparison.Ordinal);
            if (space <= 0 || space == m.Length - 1 || m.IndexOf(' ', space + 1) >= 0)
                throw new ModelFormatException($"{source}: merge {rank} '{m}' is not two tokens separated by one space");
            string a = m[..space], b = m[(space + 1)..];
            if (!vocab.TryGetValue(a, out int ia) || !vocab.TryGetValue(b, out int ib))
                throw new ModelFormatException($"{source}: merge {rank} '{m}' uses a token that is not in the vocab");
            if (!vocab.TryGetValue(a + b, out int merged))
                throw new ModelFormatException($"{source}: merge {rank} '{m}' makes '{a + b}', which is not in the vocab");
            merges.TryAdd(Key(ia, ib), (rank, merged));
        }
        for (int i = 0; i < 256; i++)
        {
            byteIds[i] = vocab.TryGetValue(string.Create(CultureInfo.InvariantCulture, $"<0x{i:X2}>"), out int id) ? id : -1;
            if (byteIds[i] >= 0) byteOfId.TryAdd(byteIds[i], (byte)i);   // the first byte naming an id, as a scan of byteIds would find
        }
        added = addedTokens.OrderByDescending(a => a.Content.Length).ThenBy(a => a.Id).ToArray();
        foreach (var a in added)
        {
            if (tokens.TryGetValue(a.Id, out var existing) && existing != a.Content)
                throw new ModelFormatException($"{source}: added token '{a.Content}' has id {a.Id}, which the vocab gives to '{existing}'");
            tokens[a.Id] = a.Content;
            vocab.TryAdd(a.Content, a.Id);
        }
        specialIds = added.Where(a => a.Special).Select(a => a.Id).ToHashSet();
        if (unknownToken is not null)
        {
            UnknownId = vocab.TryGetValue(unknownToken, out int u) ? u
                : throw new ModelFormatException($"{source}: unk_token '{unknownToken}' is not in the vocab");
            UnknownToken = unknownToken;
        }
        ByteFallback = byteFallback;
        FuseUnknown = fuseUnknown;
        if (replacement.Length == 0) throw new ModelFormatException($"{source}: the Metaspace replacement is empty");
        Replacement = replacement;
        IgnoreMerges = ignoreMerges;
        Metaspace = metaspace;
        Prepend = prepend;
        Split = split;
        this.legacyNormalizer = legacyNormalizer;
        StripLeadingSpaces = stripLeadingSpaces;
        MetaspaceDecoder = metaspaceDecoder;
        this.prefixIds = prefixIds;
        this.suffixIds = suffixIds;
    }

    static long Key(int a, int b) => ((long)a << 32) | (uint)b;

    /// <summary>Token → id, the model's vocabulary and the added tokens.</summary>
    public IReadOnlyDictionary<string, int> Vocabulary => vocab;

    public string? UnknownToken { get; }
    public int? UnknownId { get; }
    public bool ByteFallback { get; }
    public bool FuseUnknown { get; }
    /// <summary>model.ignore_merges: a word that is in the vocabulary is that token, without merging.</summary>
    public bool IgnoreMerges { get; }
    /// <summary>True when a Metaspace pre-tokenizer replaces spaces (false for the legacy normalizer, which does it itself).</summary>
    public bool Metaspace { get; }
    /// <summary>The character that stands for a space, "▁" (U+2581) in every released file.</summary>
    public string Replacement { get; }
    public PrependScheme Prepend { get; }
    /// <summary>True when the Metaspace pre-tokenizer splits the text into words before each replacement character.</summary>
    public bool Split { get; }
    /// <summary>How many leading spaces decoding removes from the text (the legacy decoder's <c>Strip</c> start, 1 for Llama 2).</summary>
    public int StripLeadingSpaces { get; }
    /// <summary>True for a Metaspace decoder that drops the "▁" of the first token (prepend_scheme first or always).</summary>
    public bool MetaspaceDecoder { get; }
    /// <summary>The ids the post-processor puts before and after a single sequence (Llama: [&lt;s&gt;] and []).</summary>
    public IReadOnlyList<int> PrefixIds => prefixIds;
    public IReadOnlyList<int> SuffixIds => suffixIds;

    /// <summary>The token of an id, or null when the id is unknown.</summary>
    public string? IdToToken(int id) => tokens.TryGetValue(id, out var t) ? t : null;

    /// <summary>The ids of <paramref name="text"/>, with the post-processor's special tokens when <paramref name="addSpecialTokens"/>.</summary>
    public IReadOnlyList<int> EncodeToIds(string text, bool addSpecialTokens) =>
        Encode(text ?? throw new ArgumentNullException(nameof(text)), addSpecialTokens, out _).Select(t => t.Id).ToList();

    protected override EncodeResults<EncodedToken> EncodeToTokens(string? text, ReadOnlySpan<char> textSpan, EncodeSettings settings)
    {
        var list = Encode(text ?? textSpan.ToString(), addSpecialTokens: true, out string normalized);
        int consumed = normalized.Length;
        if (settings.MaxTokenCount > 0 && settings.MaxTokenCount < list.Count)
        {
            list.RemoveRange(settings.MaxTokenCount, list.Count - settings.MaxTokenCount);
            consumed = list.Count == 0 ? 0 : list.Max(t => t.Offset.End.Value);
        }
        return new EncodeResults<EncodedToken> { Tokens = list, NormalizedText = normalized, CharsConsumed = consumed };
    }

    List<EncodedToken> Encode(string text, bool addSpecialTokens, out string normalizedText)
    {
        var result = new List<EncodedToken>();
        var normalized = new StringBuilder();
        if (addSpecialTokens)
            foreach (int id in prefixIds) result.Add(new EncodedToken(id, tokens[id], new Range(0, 0)));
        int pos = 0;
        while (pos <= text.Length)
        {
            var (at, token) = NextAddedToken(text, pos);
            int end = at < 0 ? text.Length : at;
            if (end > pos) EncodeSection(text[pos..end], pos == 0, normalized, result);
            if (at < 0) break;
            int start = normalized.Length;
            normalized.Append(token.Content);
            result.Add(new EncodedToken(token.Id, token.Content, new Range(start, normalized.Length)));
            pos = at + token.Content.Length;
        }
        if (addSpecialTokens)
            foreach (int id in suffixIds) result.Add(new EncodedToken(id, tokens[id], new Range(normalized.Length, normalized.Length)));
        normalizedText = normalized.ToString();
        return result;
    }

    (int At, (string Content, int Id, bool Special) Token) NextAddedToken(string text, int from)
    {
        int best = -1;
        (string, int, bool) found = default;
        foreach (var a in added) // longest first, so at equal positions the longest wins
        {
            int i = text.IndexOf(a.Content, from, StringComparison.Ordinal);
            if (i >= 0 && (best < 0 || i < best)) { best = i; found = a; }
        }
        return (best, found);
    }

    void EncodeSection(string section, bool first, StringBuilder normalized, List<EncodedToken> result)
    {
        string s = legacyNormalizer is null ? section : legacyNormalizer(section);
        if (Metaspace)
        {
            s = s.Replace(" ", Replacement, StringComparison.Ordinal);
            bool prepend = Prepend == PrependScheme.Always || (Prepend == PrependScheme.First && first);
            if (prepend && !s.StartsWith(Replacement, StringComparison.Ordinal)) s = Replacement + s;
        }
        int baseOffset = normalized.Length;
        normalized.Append(s);
        if (!Split)
        {
            EncodeWord(s, baseOffset, result);
            return;
        }
        // Split before every replacement character, which stays at the start of the next word.
        int wordStart = 0;
        for (int i = 1; i <= s.Length; i++)
        {
            if (i == s.Length || string.CompareOrdinal(s, i, Replacement, 0, Replacement.Length) == 0)
            {
                if (i > wordStart) EncodeWord(s[wordStart..i], baseOffset + wordStart, result);
                wordStart = i;
            }
        }
    }

    // The BPE of one word: characters (or their byte tokens, or unk) first, then the lowest-ranked merge of two
    // neighbours, repeatedly, until no neighbouring pair has a merge.
    void EncodeWord(string word, int offset, List<EncodedToken> result)
    {
        if (word.Length == 0) return;
        if (IgnoreMerges && vocab.TryGetValue(word, out int whole))
        {
            result.Add(new EncodedToken(whole, word, new Range(offset, offset + word.Length)));
            return;
        }
        var ids = new List<int>();
        var starts = new List<int>();
        var ends = new List<int>();
        int unk = UnknownId ?? -1;
        for (int i = 0; i < word.Length;)
        {
            int len = char.IsHighSurrogate(word[i]) && i + 1 < word.Length && char.IsLowSurrogate(word[i + 1]) ? 2 : 1;
            string ch = word.Substring(i, len);
            if (vocab.TryGetValue(ch, out int id))
            {
                Add(id, i, i + len);
            }
            else if (ByteFallback && BytesOf(ch) is { } bytes)
            {
                foreach (int b in bytes) Add(b, i, i + len);
            }
            else if (unk >= 0)
            {
                if (FuseUnknown && ids.Count > 0 && ids[^1] == unk) ends[^1] = i + len;
                else Add(unk, i, i + len);
            }
            else throw new ArgumentException($"the character '{ch}' (U+{char.ConvertToUtf32(ch, 0):X4}) is not in the vocabulary and the tokenizer has neither byte fallback for it nor an unknown token", nameof(word));
            i += len;
        }

        int n = ids.Count;
        var next = new int[n];
        var prev = new int[n];
        var alive = new bool[n];
        for (int i = 0; i < n; i++) { next[i] = i + 1 < n ? i + 1 : -1; prev[i] = i - 1; alive[i] = true; }
        var queue = new PriorityQueue<(int Left, int LeftId, int RightId), (int Rank, int Left)>();
        void Push(int left)
        {
            int right = next[left];
            if (right < 0) return;
            if (merges.TryGetValue(Key(ids[left], ids[right]), out var m)) queue.Enqueue((left, ids[left], ids[right]), (m.Rank, left));
        }
        for (int i = 0; i + 1 < n; i++) Push(i);
        while (queue.TryDequeue(out var item, out _))
        {
            int left = item.Left, right = next[left];
            if (!alive[left] || right < 0 || ids[left] != item.LeftId || ids[right] != item.RightId) continue;
            ids[left] = merges[Key(item.LeftId, item.RightId)].Merged;
            ends[left] = ends[right];
            alive[right] = false;
            next[left] = next[right];
            if (next[right] >= 0) prev[next[right]] = left;
            if (prev[left] >= 0) Push(prev[left]);
            Push(left);
        }
        for (int i = 0; i >= 0 && i < n; i = next[i])
            result.Add(new EncodedToken(ids[i], tokens[ids[i]], new Range(offset + starts[i], offset + ends[i])));

        void Add(int id, int start, int end)
        {
            ids.Add(id);
            starts.Add(start);
            ends.Add(end);
        }
    }

    int[]? BytesOf(string ch)
    {
        var utf8 = Encoding.UTF8.GetBytes(ch);
        var result = new int[utf8.Length];
        for (int i = 0; i < utf8.Length; i++)
        {
            if (byteIds[utf8[i]] < 0) return null;
            result[i] = byteIds[utf8[i]];
        }
        return result;
    }

    /// <summary>The text of <paramref name="ids"/>, special tokens left out (as Microsoft.ML.Tokenizers' Llama tokenizer decodes).</summary>
    public override string Decode(IEnumerable<int> ids) => Decode(ids, skipSpecialTokens: true);

    /// <summary>The text of <paramref name="ids"/>; transformers' <c>decode</c> with skip_special_tokens.</summary>
    /// <exception cref="ArgumentOutOfRangeException">an id is not in the vocabulary</exception>
    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var sb = new StringBuilder();
        var pending = new List<byte>();
        bool firstToken = true;
        foreach (int id in ids)
        {
            if (!tokens.TryGetValue(id, out var tok)) throw new ArgumentOutOfRangeException(nameof(ids), $"token id {id} is not in the vocabulary");
            if (skipSpecialTokens && specialIds.Contains(id)) continue;
            if (byteOfId.TryGetValue(id, out byte b) && !specialIds.Contains(id))
            {
                pending.Add(b);
                firstToken = false;
                continue;
            }
            FlushBytes(pending, sb);
            // The Metaspace decoder drops every "▁" of the first token (as tokenizers does) instead of making it a space.
            sb.Append(tok.Replace(Replacement, firstToken && MetaspaceDecoder ? "" : " ", StringComparison.Ordinal));
            firstToken = false;
        }
        FlushBytes(pending, sb);
        int strip = 0;
        while (strip < StripLeadingSpaces && strip < sb.Length && sb[strip] == ' ') strip++;
        return sb.ToString(strip, sb.Length - strip);
    }

    static void FlushBytes(List<byte> pending, StringBuilder sb)
    {
        if (pending.Count == 0) return;
        var bytes = pending.ToArray();
        pending.Clear();
        try
        {
            sb.Append(StrictUtf8.GetString(bytes));
        }
        catch (DecoderFallbackException)
        {
            sb.Append('\uFFFD', bytes.Length);
        }
    }

    public override OperationStatus Decode(IEnumerable<int> ids, Span<char> destination, out int idsConsumed, out int charsWritten)
    {
        var list = ids as IReadOnlyList<int> ?? ids.ToList();
        string text = Decode(list);
        if (text.Length > destination.Length)
        {
            idsConsumed = 0;
            charsWritten = 0;
            return OperationStatus.DestinationTooSmall;
        }
        text.AsSpan().CopyTo(destination);
        idsConsumed = list.Count;
        charsWritten = text.Length;
        return OperationStatus.Done;
    }
}
