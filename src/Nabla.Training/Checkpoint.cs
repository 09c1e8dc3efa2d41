using System.Globalization;
using System.Text;
using System.Text.Json;
using Nabla.IO;
using Nabla.Optim;

namespace Nabla.Training;

/// <summary>Everything a resumed run needs besides the tensors.</summary>
public sealed class TrainingState
{
    public int Epoch { get; set; }
    public long GlobalStep { get; set; }
    public string Architecture { get; set; } = "";
    public Dictionary<string, double> Metrics { get; set; } = new();
    public Dictionary<string, ulong[]> Rng { get; set; } = new();
    public Dictionary<string, Dictionary<string, double>> Callbacks { get; set; } = new();
    public Dictionary<string, double>? Scheduler { get; set; }
    public Dictionary<string, double>? Plateau { get; set; }
    public List<(Dictionary<string, double> options, List<int> paramIndices)> OptimizerGroups { get; set; } = new();
}

/// <summary>
/// Checkpoints are one safetensors file: tensors "model.*" (the state dict, PyTorch names) and
/// "optimizer.state.{i}.{key}", plus the JSON <see cref="TrainingState"/> in the header's metadata under
/// "nabla.checkpoint". The file is written to a temporary name and renamed, so a crash during a save
/// never damages the previous checkpoint.
/// </summary>
public static class Checkpoint
{
    const string MetaKey = "nabla.checkpoint";

    public static void Save(string path, NN.Module model, Optimizer? optimizer, TrainingState state)
    {
        var tensors = new Dictionary<string, Tensor>();
        foreach (var (k, v) in model.StateDict()) tensors["model." + k] = v;
        if (optimizer is not null)
        {
            var sd = optimizer.StateDict();
            foreach (var (i, s) in sd.State)
                foreach (var (k, v) in s) tensors[$"optimizer.state.{i.ToString(CultureInfo.InvariantCulture)}.{k}"] = v;
            state.OptimizerGroups = sd.ParamGroups;
        }
        var dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir is not null) Directory.CreateDirectory(dir);
        SafeTensors.Save(path, tensors, new Dictionary<string, string> { [MetaKey] = ToJson(state), ["format"] = "pt" });
    }

    /// <summary>Reads a checkpoint; a file that is not one names itself and the reason.</summary>
    public static (Dictionary<string, Tensor> model, OptimizerState? optimizer, TrainingState state) Load(string path)
    {
        if (!File.Exists(path)) throw new ModelFormatException($"checkpoint: file not found: {path}");
        var (tensors, meta) = SafeTensors.LoadWithMetadata(path);
        if (!meta.TryGetValue(MetaKey, out var json))
            throw new ModelFormatException($"checkpoint: {path} is a safetensors file without Nabla training state (no '{MetaKey}' metadata)");
        TrainingState state;
        try { state = FromJson(json); }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw new ModelFormatException($"checkpoint: {path}: the training state metadata is corrupt ({e.Message})", e);
        }
        var model = new Dictionary<string, Tensor>();
        var opt = new OptimizerState();
        foreach (var (k, v) in tensors)
        {
            if (k.StartsWith("model.", StringComparison.Ordinal)) model[k[6..]] = v;
            else if (k.StartsWith("optimizer.state.", StringComparison.Ordinal))
            {
                var rest = k["optimizer.state.".Length..];
                int dot = rest.IndexOf('.');
                if (dot < 0 || !int.TryParse(rest[..dot], NumberStyles.None, CultureInfo.InvariantCulture, out var idx))
                    throw new ModelFormatException($"checkpoint: {path}: malformed optimizer tensor name '{k}'");
                if (!opt.State.TryGetValue(idx, out var s)) opt.State[idx] = s = new();
                s[rest[(dot + 1)..]] = v;
            }
        }
        opt.ParamGroups.AddRange(state.OptimizerGroups);
        return (model, state.OptimizerGroups.Count > 0 ? opt : null, state);
    }

    static string ToJson(TrainingState s)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            w.WriteNumber("version", 1);
            w.WriteNumber("epoch", s.Epoch);
            w.WriteNumber("global_step", s.GlobalStep);
            w.WriteString("architecture", s.Architecture);
            WriteMap(w, "metrics", s.Metrics);
            w.WriteStartObject("rng");
            foreach (var (k, v) in s.Rng)
            {
                w.WriteStartArray(k);
                foreach (var x in v) w.WriteStringValue(x.ToString(CultureInfo.InvariantCulture));
                w.WriteEndArray();
            }
            w.WriteEndObject();
            w.WriteStartObject("callbacks");
            foreach (var (k, v) in s.Callbacks) WriteMap(w, k, v);
            w.WriteEndObject();
            if (s.Scheduler is not null) WriteMap(w, "scheduler", s.Scheduler);
            if (s.Plateau is not null) WriteMap(w, "plateau", s.Plateau);
            w.WriteStartArray("optimizer_groups");
            foreach (var (opts, idx) in s.OptimizerGroups)
            {
                w.WriteStartObject();
                WriteMap(w, "options", opts);
                w.WriteStartArray("params");
                foreach (var i in idx) w.WriteNumberValue(i);
                w.WriteEndArray();
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(ms.ToArray());
    }

    static void WriteMap(Utf8JsonWriter w, string name, Dictionary<string, double> m)
    {
        w.WriteStartObject(name);
        foreach (var (k, v) in m)
        {
            // NOTE: non-finite doubles are not JSON numbers; they go as strings.
            if (double.IsFinite(v)) w.WriteNumber(k, v);
            else w.WriteString(k, v.ToString(CultureInfo.InvariantCulture));
        }
        w.WriteEndObject();
    }

    static Dictionary<string, double> ReadMap(JsonElement e) => e.EnumerateObject().ToDictionary(p => p.Name,
        p => p.Value.ValueKind == JsonValueKind.String ? double.Parse(p.Value.GetString()!, CultureInfo.InvariantCulture) : p.Value.GetDouble());

    static TrainingState FromJson(string json)
    {
        using var doc = JsonDocument.Parse(json);
        var r = doc.RootElement;
        var s = new TrainingState
        {
            Epoch = r.GetProperty("epoch").GetInt32(),
            GlobalStep = r.GetProperty("global_step").GetInt64(),
            Architecture = r.GetProperty("architecture").GetString() ?? "",
            Metrics = ReadMap(r.GetProperty("metrics")),
        };
        foreach (var p in r.GetProperty("rng").EnumerateObject())
            s.Rng[p.Name] = p.Value.EnumerateArray().Select(x => ulong.Parse(x.GetString()!, CultureInfo.InvariantCulture)).ToArray();
        foreach (var p in r.GetProperty("callbacks").EnumerateObject()) s.Callbacks[p.Name] = ReadMap(p.Value);
        if (r.TryGetProperty("scheduler", out var sch)) s.Scheduler = ReadMap(sch);
        if (r.TryGetProperty("plateau", out var pl)) s.Plateau = ReadMap(pl);
        foreach (var g in r.GetProperty("optimizer_groups").EnumerateArray())
            s.OptimizerGroups.Add((ReadMap(g.GetProperty("options")), g.GetProperty("params").EnumerateArray().Select(x => x.GetInt32()).ToList()));
        return s;
    }
}
