/**
 * The body of the "Request access" dialog as plain DOM (no JupyterLab), so jsdom tests can drive
 * it: the expected outcome from the dataset's `request_policy`, a required justification, and the
 * days capped at the policy's maximum. Every string is set as text, never as HTML.
 */
import { clampDays, daysText, IDataset, IRequestPolicy, policyOutcomeText } from './model';
import { ITrans, plainTrans } from './i18n';

export const DEFAULT_DAYS = 30;

export interface IRequestFormValue {
  justification: string;
  days: number;
}

export class RequestFormBody {
  readonly node: HTMLDivElement;

  constructor(
    dataset: IDataset,
    readonly policy: IRequestPolicy | null,
    problem = '',
    previous?: IRequestFormValue,
    trans: ITrans = plainTrans
  ) {
    this.node = document.createElement('div');
    this.node.className = 'jp-DataAccess-requestForm';

    const intro = document.createElement('p');
    intro.textContent = trans.__(
      'Why do you need "%1" (%2)?',
      dataset.title || dataset.id,
      dataset.classification
    );
    this.node.appendChild(intro);

    const outcome = document.createElement('div');
    outcome.className = 'jp-DataAccess-outcome';
    outcome.setAttribute('role', 'status');
    if (policy) {
      const kind =
        policy.outcome === 'auto' || policy.outcome === 'deny' ? policy.outcome : 'review';
      outcome.classList.add(`jp-mod-${kind}`);
      outcome.textContent = policyOutcomeText(policy, trans);
    } else {
      outcome.textContent = trans.__('The policy decides when you send the request.');
    }
    this.node.appendChild(outcome);

    const justificationLabel = document.createElement('label');
    justificationLabel.textContent = trans.__('Justification (required)');
    this.justification = document.createElement('textarea');
    this.justification.required = true;
    this.justification.rows = 4;
    this.justification.className = 'jp-mod-styled';
    this.justification.value = previous?.justification ?? '';
    justificationLabel.appendChild(this.justification);

    const daysLabel = document.createElement('label');
    daysLabel.textContent = trans.__('Days');
    this.days = document.createElement('input');
    this.days.type = 'number';
    this.days.min = '0.01';
    this.days.step = 'any';
    this.days.required = true;
    this.days.className = 'jp-mod-styled';
    const max = this.maxDays;
    if (max !== null) {
      this.days.max = String(max);
    }
    this.days.value = daysText(clampDays(previous?.days ?? DEFAULT_DAYS, max));
    daysLabel.appendChild(this.days);
    if (max !== null) {
      const hint = document.createElement('span');
      hint.className = 'jp-DataAccess-hint';
      hint.textContent = trans._n('up to %2 day', 'up to %2 days', max, daysText(max));
      daysLabel.appendChild(hint);
    }
    // Clamp what was typed once the field is left (typing "4" on the way to "45" stays possible).
    this.days.addEventListener('change', () => this.clampInput());
    this.days.addEventListener('blur', () => this.clampInput());

    this.node.append(justificationLabel, daysLabel);
    if (problem) {
      const error = document.createElement('div');
      error.className = 'jp-DataAccess-error';
      error.setAttribute('role', 'alert');
      error.textContent = problem;
      this.node.appendChild(error);
    }
    this.justification.addEventListener('input', () => this.onChange?.());
  }

  /** The policy's cap on days, or null when unknown. */
  get maxDays(): number | null {
    const max = this.policy?.max_days;
    return typeof max === 'number' && Number.isFinite(max) && max > 0 ? max : null;
  }

  /** The policy says no: the dialog's "Request" stays disabled. */
  get denied(): boolean {
    return this.policy?.outcome === 'deny';
  }

  /** Whether "Request" may be clicked now. */
  get canSubmit(): boolean {
    return !this.denied && this.justification.value.trim() !== '';
  }

  getValue(): IRequestFormValue {
    return {
      justification: this.justification.value.trim(),
      days: clampDays(Number(this.days.value), this.maxDays)
    };
  }

  /** Called when something that decides `canSubmit` changes. */
  onChange: (() => void) | null = null;

  private clampInput(): void {
    const value = Number(this.days.value);
    const clamped = clampDays(value, this.maxDays);
    if (this.days.value !== '' && clamped !== value) {
      this.days.value = daysText(clamped);
    }
  }

  readonly justification: HTMLTextAreaElement;
  readonly days: HTMLInputElement;
}

/** Why the value cannot be sent, or '' when it can. */
export function problemWith(
  value: IRequestFormValue,
  policy: IRequestPolicy | null,
  trans: ITrans = plainTrans
): string {
  if (policy?.outcome === 'deny') {
    return policyOutcomeText(policy, trans);
  }
  if (!value.justification) {
    return trans.__('Please say why you need this dataset.');
  }
  if (!Number.isFinite(value.days) || value.days <= 0) {
    return trans.__('Days must be a positive number.');
  }
  return '';
}
