using System.Globalization;

namespace Nabla.Data;

/// <summary>Loads a numeric CSV table into a dataset: chosen target column, all other columns as float32 features.</summary>
public static class CsvDataset
{
    /// <summary>
    /// Reads <paramref name="path"/> (comma-separated; a header row when <paramref name="hasHeader"/>). The target column
    /// (by name or index, default the last) becomes int64 class labels when <paramref name="classification"/>, else float32.
    /// Errors name the file, the line and the column.
    /// </summary>
    /// <remarks>
    /// scikit-learn's bundled CSVs (iris.csv, wine_data.csv...) start with a count line, "n_samples,n_features,class
    /// names...", instead of column names. When the header's first two cells match the number of data rows and of
    /// feature columns, it is recognized as such and columns are named by index.
    /// </remarks>
    public static TensorDataset Load(string path, string? targetColumn = null, bool hasHeader = true, bool classification = true, char separator = ',')
    {
        if (!File.Exists(path)) throw new DataFormatException($"csv: file not found: {path}");
        var lines = File.ReadAllLines(path).Select((l, i) => (line: l.Trim(), number: i + 1)).Where(x => x.line.Length > 0).ToList();
        if (lines.Count == 0) throw new DataFormatException($"csv: {path} is empty");
        string[]? header = hasHeader ? lines[0].line.Split(separator).Select(h => h.Trim().Trim('"')).ToArray() : null;
        var rows = hasHeader ? lines.Skip(1).ToList() : lines;
        if (rows.Count == 0) throw new DataFormatException($"csv: {path} has a header but no data rows");
        if (header is not null && IsSklearnCountLine(header, rows.Count, rows[0].line.Split(separator).Length)) header = null;
        int cols = header?.Length ?? rows[0].line.Split(separator).Length;
        int target = cols - 1;
        if (targetColumn is not null)
        {
            if (header is not null && Array.IndexOf(header, targetColumn) is int ix and >= 0) target = ix;
            else if (int.TryParse(targetColumn, out var ti) && ti >= 0 && ti < cols) target = ti;
            else throw new DataFormatException($"csv: {path} has no column '{targetColumn}'" + (header is null ? "" : $" (columns: {string.Join(", ", header)})"));
        }
        var x = new float[rows.Count * (cols - 1)];
        var yf = new float[rows.Count];
        for (int r = 0; r < rows.Count; r++)
        {
            var cells = rows[r].line.Split(separator);
            if (cells.Length != cols)
                throw new DataFormatException($"csv: {path} line {rows[r].number} has {cells.Length} columns, expected {cols}");
            int k = 0;
            for (int c = 0; c < cols; c++)
            {
                var cell = cells[c].Trim().Trim('"');
                if (!float.TryParse(cell, NumberStyles.Float, CultureInfo.InvariantCulture, out var v))
                    throw new DataFormatException($"csv: {path} line {rows[r].number} column {(header is null ? c.ToString(CultureInfo.InvariantCulture) : header[c])}: '{cell}' is not a number");
                if (c == target) yf[r] = v;
                else x[r * (cols - 1) + k++] = v;
            }
        }
        var inputs = Tensor.FromArray(x, rows.Count, cols - 1);
        var targets = classification ? Tensor.FromArray(yf.Select(v => (long)v).ToArray()) : Tensor.FromArray(yf);
        return new TensorDataset(inputs, targets);
    }

    /// <summary>scikit-learn's first line: the sample count, the feature count, then (optionally) the class names.</summary>
    static bool IsSklearnCountLine(string[] header, int rowCount, int firstRowCells) =>
        header.Length >= 2
        && int.TryParse(header[0], NumberStyles.None, CultureInfo.InvariantCulture, out var n) && n == rowCount
        && int.TryParse(header[1], NumberStyles.None, CultureInfo.InvariantCulture, out var f) && f + 1 == firstRowCells;
}
