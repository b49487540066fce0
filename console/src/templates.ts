// The starter source of a new code, per language: the Run(engine) contract with a log line and a result.

export const TEMPLATES: Record<string, string> = {
  python: `def Run(engine):
    name = engine.params.get("name") or "world"
    engine.log.info(f"greeting {name}")
    engine.result.set({"hello": name}, status_code=200, content_type="json")
`,
  javascript: `async function Run(engine) {
  const name = engine.params.get("name") || "world";
  engine.log.info(\`greeting \${name}\`);
  engine.result.set({ hello: name }, { status_code: 200, content_type: "json" });
}
`,
  go: `package main

func Run(engine *Engine) {
	name := engine.Params.Get("name")
	if name == "" {
		name = "world"
	}
	engine.Log.Info("greeting " + name)
	engine.Result.Set(map[string]string{"hello": name}, 200, "json")
}
`,
};
