// The source editor: CodeMirror 6 with the code's language, and compile errors marked on their lines.

import { go } from "@codemirror/lang-go";
import { javascript } from "@codemirror/lang-javascript";
import { python } from "@codemirror/lang-python";
import { indentUnit } from "@codemirror/language";
import { type Diagnostic, setDiagnostics, lintGutter } from "@codemirror/lint";
import { Compartment, EditorState, type Extension } from "@codemirror/state";
import { oneDark } from "@codemirror/theme-one-dark";
import { EditorView, keymap } from "@codemirror/view";
import { basicSetup } from "codemirror";

function languageOf(name: string): Extension {
  if (name === "javascript") return javascript();
  if (name === "go") return [go(), indentUnit.of("\t")];
  return python();
}

export interface SourceEditor {
  view: EditorView;
  destroy(): void;
  text(): string;
  setText(text: string): void;
  setLanguage(name: string): void;
  /** Mark the compiler's `file.go:LINE:COL: message` lines; returns how many were placed. */
  showErrors(message: string): number;
  clearErrors(): void;
}

export function createEditor(
  parent: HTMLElement,
  options: { text: string; language: string; onChange: () => void; onSave: () => void },
): SourceEditor {
  const language = new Compartment();
  const theme = new Compartment();
  const dark = window.matchMedia("(prefers-color-scheme: dark)");
  const themeOf = () => (dark.matches ? oneDark : []);
  const view = new EditorView({
    parent,
    state: EditorState.create({
      doc: options.text,
      extensions: [
        basicSetup,
        lintGutter(),
        EditorView.lineWrapping,
        language.of(languageOf(options.language)),
        theme.of(themeOf()),
        keymap.of([{ key: "Mod-s", preventDefault: true, run: () => (options.onSave(), true) }]),
        EditorView.updateListener.of((update) => {
          if (update.docChanged) options.onChange();
        }),
        EditorView.contentAttributes.of({ "aria-label": "Source code" }),
      ],
    }),
  });
  const followScheme = () => view.dispatch({ effects: theme.reconfigure(themeOf()) });
  dark.addEventListener("change", followScheme);
  return {
    view,
    destroy() {
      dark.removeEventListener("change", followScheme);
      view.destroy();
    },
    text: () => view.state.doc.toString(),
    setText(text) {
      view.dispatch({ changes: { from: 0, to: view.state.doc.length, insert: text } });
    },
    setLanguage(name) {
      view.dispatch({ effects: language.reconfigure(languageOf(name)) });
    },
    showErrors(message) {
      const diagnostics = compileDiagnostics(view.state, message);
      view.dispatch(setDiagnostics(view.state, diagnostics));
      return diagnostics.length;
    },
    clearErrors() {
      view.dispatch(setDiagnostics(view.state, []));
    },
  };
}

const COMPILER_LINE = /^\s*(?:[\w./\\-]+\.go):(\d+)(?::(\d+))?:\s*(.+)$/;

function compileDiagnostics(state: EditorState, message: string): Diagnostic[] {
  const diagnostics: Diagnostic[] = [];
  for (const text of message.split("\n")) {
    const match = COMPILER_LINE.exec(text);
    if (!match) continue;
    const lineNumber = Number(match[1]);
    if (lineNumber < 1 || lineNumber > state.doc.lines) continue;
    const line = state.doc.line(lineNumber);
    const column = match[2] ? Math.min(Number(match[2]) - 1, line.length) : 0;
    diagnostics.push({
      from: line.from + Math.max(column, 0),
      to: line.to,
      severity: "error",
      message: match[3],
    });
  }
  return diagnostics;
}
