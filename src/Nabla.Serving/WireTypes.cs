namespace Nabla.Serving;

/// <summary>The protocol's datatype names (BOOL, INT64, FP32, ...) and their Nabla dtypes.</summary>
public static class WireTypes
{
    /// <summary>Every name the protocol defines, in the order of the model-config enum (TYPE_BOOL = 1 ... TYPE_BF16 = 14).</summary>
    public static readonly IReadOnlyList<string> All =
        ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES", "BF16"];

    public static bool IsKnown(string name) => All.Contains(name);

    /// <summary>The Nabla dtype of a wire name, or null for BYTES and for a name outside the protocol.</summary>
    public static DType? ToDType(string name) => name switch
    {
        "BOOL" => DType.Bool,
        "UINT8" => DType.UInt8,
        "UINT16" => DType.UInt16,
        "UINT32" => DType.UInt32,
        "UINT64" => DType.UInt64,
        "INT8" => DType.Int8,
        "INT16" => DType.Int16,
        "INT32" => DType.Int32,
        "INT64" => DType.Int64,
        "FP16" => DType.Float16,
        "BF16" => DType.BFloat16,
        "FP32" => DType.Float32,
        "FP64" => DType.Float64,
        _ => null,
    };

    public static string FromDType(DType t) => t switch
    {
        DType.Bool => "BOOL",
        DType.UInt8 => "UINT8",
        DType.Int8 => "INT8",
        DType.Int32 => "INT32",
        DType.Int64 => "INT64",
        DType.Float16 => "FP16",
        DType.BFloat16 => "BF16",
        DType.Float32 => "FP32",
        DType.Float64 => "FP64",
        DType.Int16 => "INT16",
        DType.UInt16 => "UINT16",
        DType.UInt32 => "UINT32",
        DType.UInt64 => "UINT64",
        _ => throw new ArgumentOutOfRangeException(nameof(t), t, "dtype has no wire type"),
    };

    /// <summary>BYTES: strings, carried as <see cref="Nabla.Interop.Onnx.StringTensor"/>s rather than Nabla tensors.</summary>
    public const string Bytes = "BYTES";

    /// <summary>Checks a request's datatype string: 400 for a name outside the protocol (Nabla serves every protocol type).</summary>
    public static void Check(string name, string what)
    {
        if (!IsKnown(name))
            throw ServingException.Invalid($"{what}: unknown datatype '{Clip(name)}'; expected one of {string.Join(", ", All)}");
    }

    /// <summary>The wire type of a value a model produced: BYTES for a string tensor's carrier, else its dtype's name.</summary>
    public static string Of(Tensor t) => Nabla.Interop.Onnx.StringTensor.IsCarrier(t) ? Bytes : FromDType(t.DType);

    /// <summary>TYPE_FP32 for FP32; BYTES is TYPE_STRING in model configurations.</summary>
    public static string ConfigName(string wire) => "TYPE_" + (wire == "BYTES" ? "STRING" : wire);

    /// <summary>The wire name of a model-config enum name (TYPE_FP32) or of a wire name itself; null if neither.</summary>
    public static string? FromConfigName(string name)
    {
        if (name.StartsWith("TYPE_", StringComparison.Ordinal))
        {
            var rest = name[5..];
            if (rest == "STRING") return "BYTES";
            return IsKnown(rest) && rest != Bytes ? rest : null;
        }
        return IsKnown(name) ? name : null;
    }

    /// <summary>Names from clients are echoed in errors; long ones are cut so an error stays small.</summary>
    internal static string Clip(string s) => s.Length <= 64 ? s : s[..64] + "...";
}
