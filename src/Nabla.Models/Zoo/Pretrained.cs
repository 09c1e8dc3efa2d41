using System.Globalization;
using System.Text.Json;
using Nabla.Interop;
using Nabla.IO;
using Nabla.NN;

namespace Nabla.Models.Zoo;

/// <summary>
/// A Hugging Face <c>config.json</c>, read with <see cref="JsonDocument"/>. Getters take the key the
/// transformers config classes use and a default for keys a config may omit; a missing key without a
/// default throws <see cref="ModelFormatException"/> naming the file and the key.
/// </summary>
public sealed class HfConfig
{
    public JsonElement Root { get; }
    public string Source { get; }

    public HfConfig(JsonElement root, string source = "config.json")
    {
        if (root.ValueKind != JsonValueKind.Object) throw new ModelFormatException($"{source}: a config must be a JSON object, got {root.ValueKind}");
        Root = root.Clone();
        Source = source;
    }

    /// <summary>Reads <paramref name="path"/>: a config.json file, or a folder holding one.</summary>
    public static HfConfig Load(string path)
    {
        if (Directory.Exists(path)) path = Path.Combine(path, "config.json");
        if (!File.Exists(path)) throw new FileNotFoundException($"model config not found: {path}", path);
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
            return new HfConfig(doc.RootElement, path);
        }
        catch (JsonException e)
        {
            throw new ModelFormatException($"{path}: not valid JSON: {e.Message}");
        }
    }

    public static HfConfig Parse(string json) { using var doc = JsonDocument.Parse(json); return new HfConfig(doc.RootElement); }

    /// <summary>True when the key is present and not null.</summary>
    public bool Has(string key) => Root.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null;

    public bool TryGet(string key, out JsonElement value) =>
        Root.TryGetProperty(key, out value) && value.ValueKind != JsonValueKind.Null;

    public string? ModelType => GetString("model_type", null);

    public int GetInt(string key, int? defaultValue = null)
    {
        if (!TryGet(key, out var v)) return defaultValue ?? throw Missing(key);
        if (v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i)) return i;
        if (v.ValueKind == JsonValueKind.Number && v.TryGetDouble(out double d) && d == Math.Floor(d) && Math.Abs(d) <= int.MaxValue) return (int)d;
        throw Bad(key, "an integer", v);
    }

    public int? GetIntOrNull(string key) => TryGet(key, out _) ? GetInt(key) : null;

    public double GetDouble(string key, double? defaultValue = null)
    {
        if (!TryGet(key, out var v)) return defaultValue ?? throw Missing(key);
        if (v.ValueKind == JsonValueKind.Number) return v.GetDouble();
        throw Bad(key, "a number", v);
    }

    public bool GetBool(string key, bool defaultValue)
    {
        if (!TryGet(key, out var v)) return defaultValue;
        return v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw Bad(key, "true or false", v),
        };
    }

    public string? GetString(string key, string? defaultValue)
    {
        if (!TryGet(key, out var v)) return defaultValue;
        return v.ValueKind == JsonValueKind.String ? v.GetString() : throw Bad(key, "a string", v);
    }

    /// <summary>An integer or a list of integers (e.g. <c>eos_token_id</c>); empty when absent.</summary>
    public long[] GetIntList(string key)
    {
        if (!TryGet(key, out var v)) return [];
        if (v.ValueKind == JsonValueKind.Number) return [v.GetInt64()];
        if (v.ValueKind == JsonValueKind.Array)
            return v.EnumerateArray().Select(e => e.ValueKind == JsonValueKind.Number ? e.GetInt64() : throw Bad(key, "a list of integers", v)).ToArray();
        throw Bad(key, "an integer or a list of integers", v);
    }

    /// <summary>Class labels from <c>id2label</c> (index → name), or "LABEL_i" for <c>num_labels</c>; empty when neither is given.</summary>
    public string[] Labels(int defaultCount = 0)
    {
        if (TryGet("id2label", out var m) && m.ValueKind == JsonValueKind.Object)
        {
            var pairs = m.EnumerateObject().Select(p => (id: int.TryParse(p.Name, NumberStyles.Integer, CultureInfo.InvariantCulture, out int i) ? i : throw Bad("id2label", "integer keys", m), name: p.Value.GetString() ?? "")).ToList();
            var labels = new string[pairs.Count == 0 ? 0 : pairs.Max(p => p.id) + 1];
            for (int i = 0; i < labels.Length; i++) labels[i] = "LABEL_" + i.ToString(CultureInfo.InvariantCulture);
            foreach (var (id, name) in pairs)
                if (id >= 0) labels[id] = name;
            if (Has("num_labels") && GetInt("num_labels") != labels.Length)
                throw new ModelFormatException($"{Source}: num_labels {GetInt("num_labels")} disagrees with id2label ({labels.Length} labels)");
            return labels;
        }
        int n = GetInt("num_labels", defaultCount);
        return Enumerable.Range(0, n).Select(i => "LABEL_" + i.ToString(CultureInfo.InvariantCulture)).ToArray();
    }

    ModelFormatException Missing(string key) => new($"{Source}: required key '{key}' is missing");
    ModelFormatException Bad(string key, string expected, JsonElement v) => new($"{Source}: '{key}' must be {expected}, got {v.ValueKind} {Truncate(v.GetRawText())}");
    static string Truncate(string s) => s.Length <= 60 ? s : s[..60] + "...";
}

/// <summary>Finding and loading the weight files of a Hugging Face or torchvision model folder.</summary>
public static class PretrainedWeights
{
    /// <summary>The weight files tried in order inside a model folder.</summary>
    public static readonly string[] WeightFileNames =
        ["model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json"];

    /// <summary>
    /// All tensors of a model: <paramref name="path"/> is a folder (the first of <see cref="WeightFileNames"/> found)
    /// or a file (.safetensors, a sharded index .json, .bin/.pt/.pth). Half-precision weights are widened to float32.
    /// </summary>
    public static Dictionary<string, Tensor> Load(string path)
    {
        string file = path;
        if (Directory.Exists(path))
        {
            file = WeightFile(path)
                ?? throw new FileNotFoundException($"no weights in {path}: expected one of {string.Join(", ", WeightFileNames)}");
        }
        else if (!File.Exists(path)) throw new FileNotFoundException($"weights not found: {path}", path);

        Dictionary<string, Tensor> tensors;
        if (file.EndsWith(".index.json", StringComparison.OrdinalIgnoreCase)) tensors = LoadSharded(file);
        else tensors = CheckpointFiles.LoadTensors(file);
        foreach (var k in tensors.Keys.ToList())
        {
            var t = tensors[k];
            if (t.DType is DType.Float16 or DType.BFloat16 or DType.Float64) tensors[k] = t.To(DType.Float32);
        }
        return tensors;
    }

    /// <summary>The weight file <see cref="Load"/> reads from a model folder (the first of <see cref="WeightFileNames"/>), or null.</summary>
    public static string? WeightFile(string directory) =>
        WeightFileNames.Select(n => Path.Combine(directory, n)).FirstOrDefault(File.Exists);

    static Dictionary<string, Tensor> LoadSharded(string indexPath)
    {
        if (indexPath.EndsWith(".safetensors.index.json", StringComparison.OrdinalIgnoreCase))
            return SafeTensors.LoadSharded(indexPath).Tensors;
        // pytorch_model.bin.index.json: {"weight_map": {name: shard file}}
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(File.ReadAllBytes(indexPath));
        }
        catch (JsonException e)
        {
            throw new ModelFormatException($"{indexPath}: sharded index is not valid JSON: {e.Message}", e);
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
                throw new ModelFormatException($"{indexPath}: sharded index has no 'weight_map' object");
            string dir = Path.GetDirectoryName(Path.GetFullPath(indexPath))!;
            var byShard = new Dictionary<string, List<string>>(StringComparer.Ordinal);
            foreach (var p in map.EnumerateObject())
            {
                string? shard = p.Value.ValueKind == JsonValueKind.String ? p.Value.GetString() : null;
                if (string.IsNullOrEmpty(shard) || shard.Contains('/') || shard.Contains('\\') || shard.Contains("..", StringComparison.Ordinal) || Path.IsPathRooted(shard))
                    throw new ModelFormatException($"{indexPath}: tensor '{p.Name}': shard '{(shard ?? p.Value.GetRawText())}' is not a plain file name in the index's folder");
                if (!byShard.TryGetValue(shard, out var names)) byShard[shard] = names = [];
                names.Add(p.Name);
            }
            var result = new Dictionary<string, Tensor>();
            foreach (var (shard, names) in byShard)
            {
                var tensors = CheckpointFiles.LoadTensors(Path.Combine(dir, shard));
                foreach (var name in names)
                    if (!tensors.ContainsKey(name))
                        throw new ModelFormatException($"{indexPath}: tensor '{name}': the weight_map places it in shard '{shard}', which has no such tensor");
                foreach (var (k, v) in tensors) result[k] = v;
            }
            return result;
        }
    }

    /// <summary>
    /// Copies <paramref name="weights"/> into <paramref name="model"/>. Each name goes through <paramref name="rename"/>
    /// (return null to drop it: tied copies, non-persistent buffers of old checkpoints); a name the model lacks is then
    /// tried with <paramref name="basePrefix"/> added or removed, so a base-model checkpoint ("h.0...") loads into
    /// a model with a head ("transformer.h.0...") and back. Missing weights throw unless
    /// <paramref name="allowMissing"/> accepts them (they keep their initial values). Returns the names left unused.
    /// </summary>
    public static List<string> LoadInto(Module model, IReadOnlyDictionary<string, Tensor> weights, string source,
        string basePrefix = "", Func<string, string?>? rename = null, Func<string, bool>? allowMissing = null)
    {
        // A model folder is named in errors by the weight file read from it.
        if (Directory.Exists(source) && WeightFile(source) is { } weightFile) source = weightFile;
        var own = model.StateDict().Keys.ToHashSet();
        var mapped = new Dictionary<string, Tensor>();
        var unused = new List<string>();
        foreach (var (name, t) in weights)
        {
            string? k = rename is null ? name : rename(name);
            if (k is null) continue;
            if (!own.Contains(k) && basePrefix.Length > 0)
            {
                if (own.Contains(basePrefix + k)) k = basePrefix + k;
                else if (k.StartsWith(basePrefix, StringComparison.Ordinal) && own.Contains(k[basePrefix.Length..])) k = k[basePrefix.Length..];
            }
            if (!own.Contains(k)) { unused.Add(name); continue; }
            if (mapped.ContainsKey(k)) throw new ModelFormatException($"{source}: two tensors map to the weight '{k}' (the second is '{name}')");
            if (t.DType != DType.Float32 && t.DType.IsFloatingPoint()) mapped[k] = t.To(DType.Float32);
            else mapped[k] = t;
        }
        var (missing, _) = model.LoadStateDict(mapped, strict: false, source: source);
        var fatal = missing.Where(m => allowMissing is null || !allowMissing(m)).ToList();
        if (fatal.Count > 0)
            throw new ModelFormatException($"{source}: {fatal.Count} weight(s) of {model.GetType().Name} missing from the checkpoint: {string.Join(", ", fatal.Take(20))}{(fatal.Count > 20 ? ", ..." : "")}");
        return unused;
    }
}

/// <summary>Pieces shared by the transformer architectures of the zoo.</summary>
public static class ZooOps
{
    /// <summary>The activation named by a config's hidden_act / activation_function.</summary>
    public static Tensor Activation(Tensor x, string name) => name switch
    {
        "gelu" => x.Gelu(),
        "gelu_new" or "gelu_pytorch_tanh" or "gelu_fast" => x.Gelu("tanh"),
        "relu" => x.Relu(),
        "silu" or "swish" => x.Silu(),
        "tanh" => x.Tanh(),
        "sigmoid" => x.Sigmoid(),
        _ => throw new NotSupportedException($"activation '{name}' is not supported (gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, relu, silu, swish, tanh, sigmoid)"),
    };

    /// <summary>
    /// softmax(q·kᵀ / sqrt(d) + mask)·v.
    /// </summary>
    /// <param name="q">(B, H, T, D)</param>
    /// <param name="k">(B, H, S, D)</param>
    /// <param name="v">(B, H, S, D)</param>
    /// <param name="mask">additive, broadcastable to (B, H, T, S), or null</param>
    /// <param name="scale">the score scale; 1/sqrt(D) when null</param>
    public static Tensor Attention(Tensor q, Tensor k, Tensor v, Tensor? mask, double? scale = null)
    {
        var scores = q.Matmul(k.Transpose(-1, -2)).Mul(scale ?? 1.0 / Math.Sqrt(q.Size(-1)));
        if (mask is not null) scores = scores.Add(mask);
        return Functional.Softmax(scores, -1).Matmul(v);
    }

    /// <summary>
    /// The additive causal mask (T, S) for T new queries after <paramref name="past"/> cached positions
    /// (S = past + T): 0 where key j ≤ past + i, float.MinValue above (as transformers' finfo.min).
    /// </summary>
    public static Tensor CausalMask(int t, int past)
    {
        int s = past + t;
        var m = new float[t * s];
        for (int i = 0; i < t; i++)
            for (int j = past + i + 1; j < s; j++) m[i * s + j] = float.MinValue;
        return Tensor.FromArray(m, t, s);
    }

    /// <summary>
    /// The additive padding mask (B, 1, 1, S) from a 0/1 attention mask (B, S): (1 - mask)·float.MinValue.
    /// </summary>
    public static Tensor PaddingMask(Tensor attentionMask)
    {
        if (attentionMask.Dim != 2) throw new ShapeMismatchException($"attention_mask: expected (batch, seq), got {ZooOps.Fmt(attentionMask.Shape)}");
        var keep = attentionMask.To(DType.Float32);
        return keep.Neg().Add(1.0).Mul(float.MinValue).Unsqueeze(1).Unsqueeze(1);
    }

    /// <summary>(B, T, H·D) → (B, H, T, D).</summary>
    public static Tensor SplitHeads(Tensor x, int heads)
    {
        int b = x.Size(0), t = x.Size(1), hd = x.Size(2) / heads;
        return x.Reshape(b, t, heads, hd).Transpose(1, 2);
    }

    /// <summary>(B, H, T, D) → (B, T, H·D).</summary>
    public static Tensor MergeHeads(Tensor x)
    {
        int b = x.Size(0), h = x.Size(1), t = x.Size(2), d = x.Size(3);
        return x.Transpose(1, 2).Reshape(b, t, h * d);
    }

    /// <summary>A shape as "[2, 3]", for error messages.</summary>
    internal static string Fmt(int[] shape) => "[" + string.Join(", ", shape) + "]";

    internal static void CheckIds(Tensor ids, int vocab, string op)
    {
        if (ids.Dim != 2) throw new ShapeMismatchException($"{op}: input_ids must be (batch, seq), got {ZooOps.Fmt(ids.Shape)}");
        if (ids.DType.IsFloatingPoint()) throw new DTypeException($"{op}: input_ids must be an integer tensor, got {ids.DType.TorchName()}");
        if (ids.NumElements == 0) return;
        long lo = (long)ids.Min().Item(), hi = (long)ids.Max().Item();
        if (lo < 0 || hi >= vocab) throw new ArgumentOutOfRangeException(nameof(ids), $"{op}: token ids must lie in [0, {vocab}), got [{lo}, {hi}]");
    }
}

/// <summary>
/// Keys and values of every attention layer from earlier forward passes, so that decoding step n costs one
/// new position instead of n. Each layer's entries are (B, H_kv, S, D); <see cref="Length"/> is S.
/// </summary>
public sealed class KVCache
{
    readonly Tensor?[] keys, values;

    public KVCache(int layers)
    {
        keys = new Tensor?[layers];
        values = new Tensor?[layers];
    }

    public int Layers => keys.Length;

    /// <summary>Positions held (S), 0 when empty.</summary>
    public int Length => keys[0]?.Size(2) ?? 0;

    /// <summary>Appends this step's (B, H, T, D) keys and values to layer <paramref name="layer"/> and returns the whole (B, H, S + T, D).</summary>
    public (Tensor keys, Tensor values) Append(int layer, Tensor k, Tensor v)
    {
        var pk = keys[layer];
        var pv = values[layer];
        var nk = pk is null ? k : Tensor.Cat([pk, k], 2);
        var nv = pv is null ? v : Tensor.Cat([pv, v], 2);
        // The cache outlives the step that made these: a per-token dispose scope must not take them.
        keys[layer] = nk.DetachFromDisposeScope();
        values[layer] = nv.DetachFromDisposeScope();
        return (nk, nv);
    }

    public void Clear()
    {
        Array.Clear(keys);
        Array.Clear(values);
    }
}
