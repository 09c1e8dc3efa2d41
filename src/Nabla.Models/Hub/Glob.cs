using System.Text;
using System.Text.RegularExpressions;

namespace Nabla.Models;

/// <summary>
/// Python's fnmatch, as huggingface_hub's allow_patterns use it: '*' matches any run of characters including '/',
/// '?' one character, '[seq]' and '[!seq]' a set; a pattern ending in '/' matches everything under that folder.
/// </summary>
public static class Glob
{
    public static bool IsMatch(string path, string pattern)
    {
        if (pattern.EndsWith('/')) pattern += "*";
        return Regex.IsMatch(path, ToRegex(pattern), RegexOptions.CultureInvariant | RegexOptions.Singleline);
    }

    static string ToRegex(string pattern)
    {
        var sb = new StringBuilder("^");
        for (int i = 0; i < pattern.Length; i++)
        {
            char c = pattern[i];
            switch (c)
            {
                case '*':
                    sb.Append(".*");
                    break;
                case '?':
                    sb.Append('.');
                    break;
                case '[':
                    int j = i + 1;
                    if (j < pattern.Length && pattern[j] == '!') j++;
                    if (j < pattern.Length && pattern[j] == ']') j++;
                    while (j < pattern.Length && pattern[j] != ']') j++;
                    if (j >= pattern.Length)
                    {
                        sb.Append("\\[");
                        break;
                    }
                    var set = pattern[(i + 1)..j].Replace("\\", "\\\\", StringComparison.Ordinal);
                    if (set.StartsWith('!')) set = "^" + set[1..];
                    else if (set.StartsWith('^')) set = "\\" + set;
                    sb.Append('[').Append(set).Append(']');
                    i = j;
                    break;
                default:
                    sb.Append(Regex.Escape(c.ToString()));
                    break;
            }
        }
        return sb.Append('$').ToString();
    }
}
