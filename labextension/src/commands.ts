/** The panel's actions as JupyterLab commands (the command palette lists them under "Data"). */
export const CommandIDs = {
  search: 'dataaccess:search',
  load: 'dataaccess:load',
  openDataset: 'dataaccess:open-dataset',
  openApprovals: 'dataaccess:open-approvals',
  openAdmin: 'dataaccess:open-admin',
  /** Reopens a service page by name (the layout restorer's command). */
  openPage: 'dataaccess:open-page'
} as const;

export const PALETTE_CATEGORY = 'Data';
